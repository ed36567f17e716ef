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
MIN_CUDA_CAPABILITY = {"flash_attn": (8, 0), "sage": (8, 0)}  # flash-attn 2 and SageAttention 2: Ampere or newer
_chosen: dict[tuple[str, str], str] = {}  # (asked, device) -> what runs; each decision logged once per process


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
    """The backend that will really run for `name` on `device`. The choice is made once per (backend, device) and
    logged once: the backend in use, or why a request falls back to PyTorch SDPA."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    device = torch.device(device)
    key = (name, str(device))
    if key not in _chosen:
        reason = _unavailable(name, device)
        _chosen[key] = "sdpa" if reason else name
        if reason:
            log.warning("attention backend %s unavailable: %s; using PyTorch SDPA", name, reason)
        else:
            log.info("attention: %s on %s", "PyTorch SDPA" if name == "sdpa" else name, device)
    return _chosen[key]


def _unavailable(name: str, device: torch.device) -> str | None:
    """Why `name` cannot run on `device`, or None."""
    if name == "sdpa":
        return None
    module = "flash_attn" if name == "flash_attn" else "sageattention"
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install {module.replace('_', '-')})"
    if device.type != "cuda":
        return f"{name} needs a CUDA device, the model runs on {device.type}"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CUDA_CAPABILITY[name]:
        need = ".".join(map(str, MIN_CUDA_CAPABILITY[name]))
        return f"{name} needs a GPU of compute capability {need} or newer, {device} has {capability[0]}.{capability[1]}"
    return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    if backend == "sdpa" or q.dtype not in (torch.float16, torch.bfloat16):
        return _sdpa(q, k, v)
    return _flash(q, k, v) if backend == "flash_attn" else _sage(q, k, v)
