"""Scaled fp8 weights: a Linear whose weight stays 1 byte per element, and the quantised layers a file declares.

ComfyUI's scaled fp8 files store float8 weights times a per-layer scale, either the old layout (a ``scaled_fp8`` marker
and ``<layer>.scale_weight``) or the newer one (``<layer>.comfy_quant`` + ``<layer>.weight_scale``, or a
``_quantization_metadata`` header entry).
"""

from __future__ import annotations

import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint_io import CheckpointFile
from .errors import WrongFileError
from .knobs import is_fp8


def dequantize_fp8(weight: torch.Tensor, scale: torch.Tensor | float, dtype: torch.dtype) -> torch.Tensor:
    """float(weight) * scale in `dtype`; a per-tensor scale, or one per output row ([out] or [out, 1])."""
    if isinstance(scale, torch.Tensor) and scale.numel() > 1:
        rows = scale.to(weight.device, torch.float32).reshape(weight.shape[0], *([1] * (weight.ndim - 1)))
        return (weight.float() * rows).to(dtype)
    return weight.to(dtype).mul_(float(scale))  # float8 -> dtype is exact; one rounding in the multiply


class Fp8Linear(nn.Module):
    """Bias-free Linear holding a float8 weight and its scale; dequantised (exactly: float8 values are representable
    in bf16/fp16/fp32) and scaled in the input's dtype on every call, so the weight costs 1 byte per element."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor | float = 1.0):
        super().__init__()
        assert is_fp8(weight.dtype) and weight.ndim == 2
        self.out_features, self.in_features = weight.shape
        self.fp8_dtype = weight.dtype
        # kept as uint8 so that Module.to(dtype) / .half() never converts it
        self.register_buffer("weight_fp8", weight.contiguous().view(torch.uint8))
        scale = torch.as_tensor(scale, dtype=torch.float32)
        if scale.numel() == 1:
            self.scale = float(scale)
            self.register_buffer("row_scale", None)
        elif scale.numel() == self.out_features:  # one scale per output row
            self.scale = 1.0
            self.register_buffer("row_scale", scale.reshape(-1, 1).to(weight.device))
        else:
            raise WrongFileError(f"fp8 scale of shape {tuple(scale.shape)} does not fit a weight of shape "
                                 f"{tuple(weight.shape)}; only per-tensor and per-row scales are supported")
        # transformers' UMT5 FFN casts its input to `wo.weight.dtype` when `weight` is a tensor; with None it does not
        self.weight = None

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_fp8(self.weight_fp8.view(self.fp8_dtype),
                              self.row_scale if self.row_scale is not None else self.scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight={self.fp8_dtype}"


def _quantized_layers(f: CheckpointFile) -> dict[str, tuple[str, str | None]]:
    """file layer name (key without `.weight`) -> (format, scale key or None) for every quantised layer declared."""
    keys = set(f.keys)
    formats: dict[str, str] = {}
    if "_quantization_metadata" in f.metadata:  # newer ComfyUI layout, declared in the header
        try:
            for layer, conf in json.loads(f.metadata["_quantization_metadata"]).get("layers", {}).items():
                formats[layer] = conf.get("format", "")
        except (ValueError, AttributeError) as exc:
            raise WrongFileError(f"`{f.path.name}` has an unreadable _quantization_metadata header ({exc})") from exc
    for k in f.keys:
        if k.endswith(".comfy_quant"):  # newer ComfyUI layout, one JSON byte tensor per layer
            conf = json.loads(bytes(f.get(k).tolist()).decode("utf-8"))
            formats[k[: -len(".comfy_quant")]] = conf.get("format", "")
    if any(k.endswith("scaled_fp8") for k in keys):  # old layout: every layer with a scale_weight is float8
        for k in f.keys:
            if k.endswith(".scale_weight"):
                formats.setdefault(k[: -len(".scale_weight")], "float8_e4m3fn")
    out = {}
    for layer, fmt in formats.items():
        if fmt not in ("float8_e4m3fn", "float8_e5m2"):
            raise WrongFileError(f"`{f.path.name}` layer `{layer}` is quantised as `{fmt}`, which this loader does not "
                                 "support (float8_e4m3fn / float8_e5m2 only). Use umt5_xxl_fp16.safetensors or "
                                 "umt5_xxl_fp8_e4m3fn_scaled.safetensors.")
        scale = next((f"{layer}{s}" for s in (".weight_scale", ".scale_weight") if f"{layer}{s}" in keys), None)
        out[layer] = (fmt, scale)
    return out
