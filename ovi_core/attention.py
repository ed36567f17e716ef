"""Attention backends: PyTorch SDPA (default), flash-attn and SageAttention when installed and asked for.

All take q, k, v as [B, L, H, D] (heads third, as the towers produce them) and return [B, Lq, H, D].
Ovi never masks keys in its fused model (text padding is attended, sequences in a batch have equal length),
so no mask is needed.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Backend:
    kernel: Callable  # (q, k, v) [B, L, H, D] -> [B, Lq, H, D]
    module: str | None = None  # the package it imports (None: PyTorch itself)
    min_capability: tuple[int, int] | None = None  # oldest CUDA compute capability it runs on


# The attention backends (ovi_core.knobs offers these names to the CLI and the nodes). flash-attn 2 and
# SageAttention 2 run on Ampere or newer.
BACKENDS: dict[str, Backend] = {
    "sdpa": Backend(_sdpa),
    "flash_attn": Backend(_flash, "flash_attn", (8, 0)),
    "sage": Backend(_sage, "sageattention", (8, 0)),
}


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
    backend = BACKENDS[name]
    if backend.module is None:
        return None
    if importlib.util.find_spec(backend.module) is None:
        return f"{backend.module} is not installed (pip install {backend.module.replace('_', '-')})"
    if device.type != "cuda":
        return f"{name} needs a CUDA device, the model runs on {device.type}"
    capability = torch.cuda.get_device_capability(device)
    if backend.min_capability is not None and capability < backend.min_capability:
        need = ".".join(map(str, backend.min_capability))
        return f"{name} needs a GPU of compute capability {need} or newer, {device} has {capability[0]}.{capability[1]}"
    return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    if q.dtype not in (torch.float16, torch.bfloat16):  # the other kernels take half precision only
        return _sdpa(q, k, v)
    return BACKENDS[backend].kernel(q, k, v)
