"""Small layers that keep their weights in the stored dtype and compute in a chosen dtype.

Weights may be float32, bfloat16, float16 or float8_e4m3fn in memory; each layer casts its weight to the
compute dtype at the moment it is used, so an fp8 checkpoint stays one byte per weight and is upcast one
layer at a time. LayerNorm and RMSNorm compute in float32 and return float32 (the reference's WanLayerNorm and
WanRMSNorm normalise in float32 too).

The video patch embedding (kernel = stride, no padding) runs as a reshape + one matmul (at 720x720_5s's 15,004
tokens 1.4x faster than the Conv3d on the CPU). The audio tower's k=7 convolutions stay convolutions: oneDNN's
1-D convolution beat an im2col matmul by 1.3-1.4x at every shape measured.

fp8 weights on a GPU with fp8 tensor cores (CUDA capability 8.9+: Ada, Hopper, Blackwell) multiply in fp8:
``torch._scaled_mm`` with the input quantised per tensor to float8_e4m3fn (scale amax/448; the weight's scale is 1,
Ovi's fp8 files store plain e4m3 weights) and float32 accumulation, about twice the bf16 GEMM rate. Everywhere else
(the CPU, older GPUs, float32 compute, shapes not multiples of 16) the weight is upcast for that layer, as before.
``set_fp8_matmul(model, False)`` turns the fp8 GEMM off (exact upcast numbers on every device).

A caller may bring its own layer classes (``resolve_operations``): a namespace with Linear, Conv1d, Conv3d,
LayerNorm and RMSNorm classes that take torch's constructor arguments, as ComfyUI's ``comfy.ops.manual_cast``
or ``disable_weight_init``. They are wrapped so that inputs reach them in the compute dtype; their own forward
handles their weights. Parameter names stay torch's (``weight``, ``bias``), so checkpoint keys do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def _cast(t: torch.Tensor | None, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor | None:
    """t in dtype (and on device, when given: a host may keep weights off the compute device, ComfyUI's lowvram)."""
    if t is None or (t.dtype == dtype and (device is None or t.device == device)):
        return t
    return t.to(device=device, dtype=dtype)


class ComputeDtype:
    """Mixin: `compute_dtype` is set on every layer by OviFusion.set_compute_dtype."""

    compute_dtype: torch.dtype = torch.float32


_FP8_MAX = 448.0  # the largest float8_e4m3fn value
_fp8_devices: dict[tuple[str, int | None], bool] = {}


def fp8_matmul_supported(device: torch.device | str) -> bool:
    """Whether ``torch._scaled_mm`` runs fp8 GEMMs on ``device``: CUDA with capability 8.9 or newer."""
    device = torch.device(device)
    key = (device.type, device.index)
    if key not in _fp8_devices:
        _fp8_devices[key] = (device.type == "cuda" and hasattr(torch, "_scaled_mm")
                             and torch.cuda.get_device_capability(device) >= (8, 9))
    return _fp8_devices[key]


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """x @ weight.T + bias for a float8_e4m3fn weight [out, in] in one fp8 GEMM: x is quantised per tensor (scale
    amax/448), products accumulate in float32, the result is ``out_dtype`` (bf16 or fp16)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    scale = (x2.abs().amax().float() / _FP8_MAX).clamp_min(1e-12)  # [] float32
    xq = (x2.float() / scale).clamp_(-_FP8_MAX, _FP8_MAX).to(torch.float8_e4m3fn)
    one = torch.ones((), device=x.device, dtype=torch.float32)
    out = torch._scaled_mm(xq, weight.t(), scale_a=scale, scale_b=one, bias=_cast(bias, out_dtype, x.device),
                           out_dtype=out_dtype)
    return out.reshape(*shape[:-1], weight.shape[0])


class Linear(nn.Linear, ComputeDtype):
    fp8_matmul = True  # fp8 weights: fp8 GEMM where the device supports it (set_fp8_matmul)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = self.compute_dtype
        w = self.weight
        if (w.dtype == torch.float8_e4m3fn and self.fp8_matmul and cd in (torch.bfloat16, torch.float16)
                and w.device == x.device and w.shape[0] % 16 == 0 and w.shape[1] % 16 == 0
                and fp8_matmul_supported(x.device)):
            return fp8_linear(x, w, self.bias, cd)
        return F.linear(_cast(x, cd), _cast(w, cd, x.device), _cast(self.bias, cd, x.device))


def set_fp8_matmul(model: nn.Module, enabled: bool) -> nn.Module:
    """Turn the fp8 GEMM of fp8-weight layers on (default, where supported) or off (upcast: exact numbers)."""
    for m in model.modules():
        if isinstance(m, Linear):
            m.fp8_matmul = bool(enabled)
    return model


class Conv3d(nn.Conv3d, ComputeDtype):
    """The video patch embedding. ``patch_tokens`` computes it as one matmul over non-overlapping patches."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = self.compute_dtype
        return self._conv_forward(_cast(x, cd), _cast(self.weight, cd, x.device), _cast(self.bias, cd, x.device))

    def patch_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """[B, C, F, H, W] -> tokens [B, F'*H'*W', out] in (frame, row, col) order, and the grid (F', H', W').

        Equals forward(x).flatten(2).transpose(1, 2) when stride == kernel_size and there is no padding."""
        assert tuple(self.stride) == tuple(self.kernel_size) and not any(self.padding), "patch_tokens needs stride = kernel"
        cd = self.compute_dtype
        b, c, f, h, w = x.shape
        pt, ph, pw = self.kernel_size
        grid = (f // pt, h // ph, w // pw)
        # channel-last first (one transpose), then each patch's (pt, ph, pw, C) values side by side: runs of pw*C
        x = _cast(x, cd).permute(0, 2, 3, 4, 1).reshape(b, grid[0], pt, grid[1], ph, grid[2], pw, c)
        patches = x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, grid[0] * grid[1] * grid[2], pt * ph * pw * c)
        weight = _cast(self.weight, cd, x.device).permute(0, 2, 3, 4, 1).reshape(self.out_channels, -1)  # (kt, kh, kw, in)
        return F.linear(patches, weight, _cast(self.bias, cd, x.device)), grid


class ChannelLastConv1d(nn.Conv1d, ComputeDtype):
    """Conv1d over [B, L, C] (channel-last) sequences."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = self.compute_dtype
        y = self._conv_forward(_cast(x, cd).transpose(1, 2), _cast(self.weight, cd, x.device),
                               _cast(self.bias, cd, x.device))
        return y.transpose(1, 2)


class ConvMLP(nn.Module):
    """SwiGLU of three bias-free channel-last convolutions: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int, kernel_size: int = 7, padding: int = 3, operations=None):
        super().__init__()
        conv = resolve_operations(operations).ChannelLastConv1d
        self.w1 = conv(dim, hidden, kernel_size, padding=padding, bias=False)
        self.w2 = conv(hidden, dim, kernel_size, padding=padding, bias=False)
        self.w3 = conv(dim, hidden, kernel_size, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.w1(x), inplace=True)
        return self.w2(h.mul_(self.w3(x)))


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32; returns float32."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = False):
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(
            x.float(), self.normalized_shape, _cast(self.weight, torch.float32, x.device),
            _cast(self.bias, torch.float32, x.device), self.eps
        )


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim, computed in float32 in one fused pass; returns float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.weight.shape, _cast(self.weight, torch.float32, x.device), self.eps)


class GELU(nn.Module):
    """GELU (tanh approximation) in place: the FFN's hidden state, the largest activation, is not copied."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._C._nn.gelu_(x, approximate="tanh")


# ---- caller-supplied layer classes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Operations:
    """The layer classes the towers are built from."""

    Linear: type
    Conv3d: type
    ChannelLastConv1d: type
    LayerNorm: type  # called as LayerNorm(dim, eps, elementwise_affine=...)
    RMSNorm: type  # called as RMSNorm(dim, eps)


DEFAULT_OPERATIONS = Operations(Linear, Conv3d, ChannelLastConv1d, LayerNorm, RMSNorm)


class _InComputeDtype(ComputeDtype):
    """Casts the input to the compute dtype, then runs the caller's layer (which handles its weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_cast(x, self.compute_dtype))


class _ChannelLast(ComputeDtype):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_cast(x, self.compute_dtype).transpose(1, 2)).transpose(1, 2)


class _InFloat32:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


def _layer_norm_factory(cls: type) -> type:
    class OpsLayerNorm(_InFloat32, cls):
        def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = False):
            super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    OpsLayerNorm.__name__ = OpsLayerNorm.__qualname__ = f"LayerNorm({cls.__module__}.{cls.__qualname__})"
    return OpsLayerNorm


def _rms_norm_factory(cls: type) -> type:
    class OpsRMSNorm(cls):  # in the dtype it is given (the compute dtype after a Linear), as the reference
        def __init__(self, dim: int, eps: float = 1e-6):
            super().__init__(dim, eps=eps)

    OpsRMSNorm.__name__ = OpsRMSNorm.__qualname__ = f"RMSNorm({cls.__module__}.{cls.__qualname__})"
    return OpsRMSNorm


_resolved: dict[int, tuple[object, Operations]] = {}


def resolve_operations(operations=None) -> Operations:
    """Our own layers (None), an Operations, or a namespace with Linear, Conv1d, Conv3d, LayerNorm and RMSNorm
    classes (ComfyUI's comfy.ops.manual_cast, disable_weight_init...), wrapped to fit the towers."""
    if operations is None:
        return DEFAULT_OPERATIONS
    if isinstance(operations, Operations):
        return operations
    hit = _resolved.get(id(operations))
    if hit is not None and hit[0] is operations:
        return hit[1]
    missing = [n for n in ("Linear", "Conv1d", "Conv3d", "LayerNorm", "RMSNorm") if not hasattr(operations, n)]
    if missing:
        raise TypeError(f"operations {operations!r} lacks {', '.join(missing)} (give a namespace like comfy.ops.manual_cast)")
    ops = Operations(
        Linear=type("Linear", (_InComputeDtype, operations.Linear), {}),
        Conv3d=type("Conv3d", (_InComputeDtype, operations.Conv3d), {}),
        ChannelLastConv1d=type("ChannelLastConv1d", (_ChannelLast, operations.Conv1d), {}),
        LayerNorm=_layer_norm_factory(operations.LayerNorm),
        RMSNorm=_rms_norm_factory(operations.RMSNorm),
    )
    _resolved[id(operations)] = (operations, ops)
    return ops
