"""Rotary position embeddings of the two towers (interleaved-pair convention).

Follows character-ai/Ovi and Wan2.2 (Apache-2.0), ovi/modules/model.py. The head dim is seen as complex
numbers made of adjacent pairs (2j, 2j+1). With head dim d: the first d_t/2 pairs (d_t = d - 4*(d//6)) turn
with the latent frame index, then d//6 pairs with the token row, then d//6 with the token column. The audio
tower turns only the first d_t/2 pairs, with positions scaled by 0.19676 (audio latents are 31/157.55 of a
video latent frame apart), so the cross-modal attention sees relative audio-video timing.
Angles are computed in float64; the rotation is applied in float32, in one pass (a complex multiply, which
rounds exactly as the real formula re*c - im*s, re*s + im*c), in place on the normalised q/k when they are
float32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class RopeTable(NamedTuple):
    """cos, sin [L, D/2] float32, and cis = cos + i sin (complex64) where the device has complex kernels."""

    cos: torch.Tensor
    sin: torch.Tensor
    cis: torch.Tensor | None


def _inv_freq(n: int, theta: float = 10000.0) -> torch.Tensor:
    """1 / theta^(2j/n), j = 0 .. n/2 - 1, float64."""
    return 1.0 / torch.pow(theta, torch.arange(0, n, 2, dtype=torch.float64) / n)


def video_rope(frames: int, rows: int, cols: int, head_dim: int, device=None) -> RopeTable:
    """cos, sin tables [frames*rows*cols, head_dim/2] (token order frame, row, col)."""
    d_t = head_dim - 4 * (head_dim // 6)
    d_s = 2 * (head_dim // 6)
    f = torch.arange(frames, dtype=torch.float64)[:, None] * _inv_freq(d_t)  # [F, d_t/2]
    h = torch.arange(rows, dtype=torch.float64)[:, None] * _inv_freq(d_s)  # [H, d_s/2]
    w = torch.arange(cols, dtype=torch.float64)[:, None] * _inv_freq(d_s)  # [W, d_s/2]
    angles = torch.cat(
        [
            f[:, None, None].expand(frames, rows, cols, -1),
            h[None, :, None].expand(frames, rows, cols, -1),
            w[None, None, :].expand(frames, rows, cols, -1),
        ],
        dim=-1,
    ).reshape(frames * rows * cols, -1)
    return _tables(angles, device)


def audio_rope(length: int, head_dim: int, scale: float, device=None) -> RopeTable:
    """cos, sin tables [length, head_dim/2]; pairs past the first d_t/2 get angle 0 (pass through)."""
    d_t = head_dim - 4 * (head_dim // 6)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * (scale * _inv_freq(d_t))  # [L, d_t/2]
    angles = torch.cat([angles, angles.new_zeros(length, head_dim // 2 - d_t // 2)], dim=1)
    return _tables(angles, device)


def _tables(angles: torch.Tensor, device) -> RopeTable:
    cos, sin = torch.cos(angles).float().to(device), torch.sin(angles).float().to(device)
    cis = torch.complex(cos, sin) if cos.device.type in ("cpu", "cuda") else None  # e.g. MPS: no complex kernels
    return RopeTable(cos, sin, cis)


def apply_rope(x: torch.Tensor, table: RopeTable, inplace: bool = False) -> torch.Tensor:
    """Rotate x [B, L, H, D] by the table [L, D/2]; computed in float32, returned in x's dtype.

    inplace: overwrite x (float32 only; other dtypes are rotated in a float32 copy)."""
    b, n, h, d = x.shape
    if table.cis is not None and x.stride(-1) == 1:
        xf = x if x.dtype == torch.float32 else x.float()
        xc = torch.view_as_complex(xf.unflatten(-1, (d // 2, 2)))  # [B, L, H, D/2]
        cis = table.cis[None, :, None, :]
        if inplace and xf is x:
            xc.mul_(cis)
            return x
        return torch.view_as_real(xc * cis).flatten(-2).to(x.dtype)
    xf = x.float().reshape(b, n, h, d // 2, 2)
    re, im = xf[..., 0], xf[..., 1]
    c, s = table.cos[None, :, None, :], table.sin[None, :, None, :]
    out = torch.stack((re * c - im * s, re * s + im * c), dim=-1).reshape(b, n, h, d).to(x.dtype)
    return x.copy_(out) if inplace else out
