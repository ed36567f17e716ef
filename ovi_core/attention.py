"""Attention backends: PyTorch SDPA (default), flash-attn and SageAttention when installed and asked for.

All take q, k, v as [B, L, H, D] (heads third, as the towers produce them) and return [B, Lq, H, D].
Ovi never masks keys in its fused model (text padding is attended, sequences in a batch have equal length),
so no mask is needed.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BACKENDS = ("sdpa", "flash_attn", "sage")
_warned: set[str] = set()


def _sdpa(q, k, v):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _flash(q, k, v):
    from flash_attn import flash_attn_func

    return flash_attn_func(q, k, v)


def _sage(q, k, v):
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


def resolve_backend(name: str, device: torch.device | str = "cpu") -> str:
    """The backend that will really run for `name` on `device`, logging once why a request falls back."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "sdpa":
        return name
    module = "flash_attn" if name == "flash_attn" else "sageattention"
    reason = None
    if importlib.util.find_spec(module) is None:
        reason = f"{module} is not installed (pip install {module.replace('_', '-')})"
    elif torch.device(device).type != "cuda":
        reason = f"{name} needs a CUDA device, the model runs on {torch.device(device).type}"
    if reason:
        if name not in _warned:
            log.warning("attention backend %s unavailable: %s; using PyTorch SDPA", name, reason)
            _warned.add(name)
        return "sdpa"
    return name


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    if backend == "sdpa" or q.dtype not in (torch.float16, torch.bfloat16):
        return _sdpa(q, k, v)
    return _flash(q, k, v) if backend == "flash_attn" else _sage(q, k, v)
