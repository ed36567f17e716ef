"""Small layers that keep their weights in the stored dtype and compute in a chosen dtype.

Weights may be float32, bfloat16, float16 or float8_e4m3fn in memory; each layer casts its weight to the
compute dtype at the moment it is used, so an fp8 checkpoint stays one byte per weight and is upcast one
layer at a time. Norms always compute in float32 (as the reference's float32 evaluation does).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if t is None or t.dtype == dtype:
        return t
    return t.to(dtype)


class ComputeDtype:
    """Mixin: `compute_dtype` is set on every layer by OviFusion.set_compute_dtype."""

    compute_dtype: torch.dtype = torch.float32


class Linear(nn.Linear, ComputeDtype):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = self.compute_dtype
        return F.linear(_cast(x, cd), _cast(self.weight, cd), _cast(self.bias, cd))


class Conv3d(nn.Conv3d, ComputeDtype):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = self.compute_dtype
        return self._conv_forward(_cast(x, cd), _cast(self.weight, cd), _cast(self.bias, cd))


class ChannelLastConv1d(nn.Conv1d, ComputeDtype):
    """Conv1d over [B, L, C] (channel-last) sequences."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = self.compute_dtype
        y = self._conv_forward(_cast(x, cd).transpose(1, 2), _cast(self.weight, cd), _cast(self.bias, cd))
        return y.transpose(1, 2)


class ConvMLP(nn.Module):
    """SwiGLU of three bias-free channel-last convolutions: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int, kernel_size: int = 7, padding: int = 3):
        super().__init__()
        self.w1 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)
        self.w2 = ChannelLastConv1d(hidden, dim, kernel_size, padding=padding, bias=False)
        self.w3 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32; returns float32."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = False):
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(
            x.float(), self.normalized_shape, _cast(self.weight, torch.float32), _cast(self.bias, torch.float32), self.eps
        )


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim, computed in float32; returns float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * _cast(self.weight, torch.float32)
