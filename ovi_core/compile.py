"""torch.compile for the fusion model (the CLI's ``--compile``).

The whole ``OviFusion.forward`` is compiled (ComfyUI's core TorchCompileModel compiles the same object: the MODEL's
``diffusion_model``). The forward's Python decisions (segments of clean tokens, the skip-layer rows, stop requests
between blocks) become graph breaks or guards; the fused blocks are the graphs. The first forward of each new shape
pays the compilation (minutes at the real sizes with inductor); the numbers equal the eager forward's to float32
rounding (tests/test_compile.py).
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

MODES = ("default", "reduce-overhead", "max-autotune")


def compile_fusion(model: torch.nn.Module, mode: str = "default", backend: str = "inductor") -> torch.nn.Module:
    """A compiled view of ``model`` (an OviFusion): same parameters, same attributes (``prepare_text``, ``cfg``,
    ``device`` are reached through it), forward compiled by ``torch.compile``."""
    if mode not in MODES:
        raise ValueError(f"torch.compile mode must be one of {', '.join(MODES)}, got {mode!r}")
    logger.info("torch.compile of the fusion model (backend %s, mode %s): the first step compiles", backend, mode)
    return torch.compile(model, mode=None if mode == "default" else mode, backend=backend)
