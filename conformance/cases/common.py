"""Helpers shared by the golden-case runners."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def load_case(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The case tensors and its JSON sidecar (empty dict when there is none)."""
    tensors = load_file(str(path))
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    return tensors, meta


def max_abs_err(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, str]:
    """Largest |got - want| over named (got, want) pairs, and the name where it occurs.

    A shape mismatch or a NaN gives an infinite error."""
    worst, where = 0.0, ""
    for name, (got, want) in pairs.items():
        if tuple(got.shape) != tuple(want.shape):
            return float("inf"), f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
        if err != err:  # NaN
            return float("inf"), f"{name}: NaN"
        if err >= worst:
            worst, where = err, name
    return worst, where
