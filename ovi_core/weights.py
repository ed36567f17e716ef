"""Checkpoint files of the Ovi fusion model: inspection, layout detection and streamed loading.

The released files (chetwinlow1/Ovi model.safetensors, model_960x960.safetensors,
model_960x960_10s.safetensors; rkfg/Ovi-fp8_quantized model_fp8_e4m3fn.safetensors) use the module names of
ovi_core.fusion.OviFusion directly. Loading builds the model on the meta device and assigns the file's tensors to
it one by one. A safetensors file is memory-mapped: a tensor already in the wanted dtype on the CPU is used where
it lies in the map, without a copy, and is read from disk when the first forward touches it; so loading costs
about one read of the file and peak memory is about one model (file-backed pages the system can drop), not two.
fp8 e4m3fn tensors may stay one byte per weight; layers upcast them one at a time when they run
(ovi_core.layers). The NaN/Inf scan of every tensor reads the whole file up front: it is off by default and on
in ``check_finite_checkpoint`` / ``load_fusion_model(..., check_finite=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ovi_core import interrupt
from ovi_core.checkpoint_io import CheckpointFile
from ovi_core.config import DEFAULT_VARIANT, FP8_FILENAME, VARIANTS, FusionConfig, TowerConfig
from ovi_core.errors import WrongFileError
from ovi_core.fusion import OviFusion
from ovi_core.knobs import WEIGHT_DTYPES, is_fp8

log = logging.getLogger(__name__)

# Prefixes that repackaged files put before the released names; stripped on load (a rename table, as data).
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "model.")

# What a file is when it is not an Ovi fused model: (regex on a key, description, what to use instead).
FOREIGN_LAYOUTS: tuple[tuple[str, str, str], ...] = (
    (r"^(encoder\.block\.\d+\.layer|shared\.weight|token_embedding\.weight|blocks\.\d+\.attn\.q\.weight)",
     "a umT5/T5 text encoder", "load it with the Ovi text encoder loader"),
    (r"^(decoder\.(conv_in|upsamples|middle|head)|encoder\.(downsamples|conv1)|conv2\.weight)",
     "a Wan video VAE", "load it with the Ovi video VAE loader"),
    (r"^(conv_pre\.|ups\.\d+|resblocks\.\d+|generator\.)", "a BigVGAN vocoder", "load it with the Ovi audio VAE loader"),
    (r"^(data_mean|decoder\.conv_out|encoder\.learnable_gain|decoder\.learnable_gain)",
     "an MMAudio audio VAE", "load it with the Ovi audio VAE loader"),
    (r"^(transformer_blocks\.|condition_embedder\.|blocks\.\d+\.attn1\.)",
     "a diffusers-format video transformer", "Ovi needs its own fused file"),
    (r"^blocks\.\d+\.(self_attn|cross_attn)\.", "a Wan2.x video DiT (for example Wan2.2-TI2V-5B) with no audio tower",
     "Ovi's video tower starts from Wan2.2-5B but the fused file holds both towers"),
)
GET_WEIGHTS = ("the fused file model.safetensors (720x720_5s), model_960x960.safetensors or "
               "model_960x960_10s.safetensors from huggingface.co/chetwinlow1/Ovi, or model_fp8_e4m3fn.safetensors "
               "from huggingface.co/rkfg/Ovi-fp8_quantized")


@dataclass
class CheckpointInfo:
    """What a checkpoint holds, read without loading its tensors."""

    path: Path
    shapes: dict[str, tuple[int, ...]]  # released key -> shape
    dtypes: dict[str, str]  # released key -> dtype name as stored
    file_keys: dict[str, str]  # released key -> key in the file
    metadata: dict[str, str] = field(default_factory=dict)
    format: str = "safetensors"

    @property
    def is_fp8(self) -> bool:
        return any("F8" in d or "float8" in d for d in self.dtypes.values())


@dataclass
class LoadInfo:
    variant: str
    variant_source: str  # "argument", "file metadata", "file name" or "default"
    config: FusionConfig
    is_fp8: bool
    parameters: int
    bytes_in_memory: int


def _strip_prefix(key: str) -> str:
    for p in KEY_PREFIXES:
        if key.startswith(p) and key[len(p):].startswith(("video_model.", "audio_model.")):
            return key[len(p):]
    return key


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Keys, shapes and dtypes of a fused-model file (.safetensors, or .pt/.pth/.ckpt as the reference accepts)."""
    path = Path(path)
    if not path.is_file():
        raise WrongFileError(f"{path} does not exist; Ovi needs {GET_WEIGHTS}")
    with CheckpointFile(path) as f:
        file_keys = {_strip_prefix(k): k for k in f.keys}
        return CheckpointInfo(path, {k: f.shape(v) for k, v in file_keys.items()},
                              {k: f.dtype(v) for k, v in file_keys.items()}, file_keys, f.metadata, f.format)


# ---- recognising the file ----------------------------------------------------------------------------------
def check_is_fusion_checkpoint(info: CheckpointInfo) -> None:
    """Raise WrongFileError describing the file when it is not an Ovi fused checkpoint."""
    keys = list(info.shapes)
    has_v = any(k.startswith("video_model.") for k in keys)
    has_a = any(k.startswith("audio_model.") for k in keys)
    name = info.path.name
    if has_v and has_a:
        return
    if has_v or has_a:
        have = "video_model.*" if has_v else "audio_model.*"
        miss = "audio_model.*" if has_v else "video_model.*"
        raise WrongFileError(f"{name} has {have} keys but no {miss} keys: it holds only one tower of Ovi. Use {GET_WEIGHTS}")
    for pattern, what, instead in FOREIGN_LAYOUTS:
        if any(re.match(pattern, k) for k in keys):
            raise WrongFileError(f"{name} has no video_model.*/audio_model.* keys — it looks like {what}; {instead}. "
                                 f"The Ovi model loader needs {GET_WEIGHTS}")
    sample = ", ".join(keys[:3]) or "no tensors at all"
    raise WrongFileError(f"{name} is not an Ovi fused checkpoint (first keys: {sample}). Use {GET_WEIGHTS}")


def config_from_checkpoint(info: CheckpointInfo, num_heads: int | None = None) -> FusionConfig:
    """Read the model size from weight shapes (heads from file metadata, the argument, or head_dim 128)."""
    s = info.shapes
    try:
        dim, in_v = s["video_model.patch_embedding.weight"][:2]
        in_a = s["audio_model.patch_embedding.0.weight"][1]
        ffn = s["video_model.blocks.0.ffn.0.weight"][0]
        out_v = s["video_model.head.head.weight"][0] // 4
        out_a = s["audio_model.head.head.weight"][0]
    except KeyError as exc:
        raise WrongFileError(f"{info.path.name} lacks {exc.args[0]}: the file is incomplete. Use {GET_WEIGHTS}") from None
    layers = 1 + max(int(m.group(1)) for k in s if (m := re.match(r"video_model\.blocks\.(\d+)\.", k)))
    if "ovi_config" in info.metadata:
        return FusionConfig.from_reference_json(json.loads(info.metadata["ovi_config"]))
    if num_heads is None:
        if dim % 128:
            raise WrongFileError(f"{info.path.name}: cannot tell the number of attention heads for width {dim} "
                                 "(not a multiple of 128); pass a config")
        num_heads = dim // 128
    kw = dict(dim=dim, ffn_dim=ffn, num_heads=num_heads, num_layers=layers)
    return FusionConfig(
        video=TowerConfig(kind="video", in_dim=in_v, out_dim=out_v, **kw),
        audio=TowerConfig(kind="audio", in_dim=in_a, out_dim=out_a, patch_size=(1,), temporal_rope_scale=0.19676, **kw),
    )


def detect_variant(info: CheckpointInfo) -> tuple[str, str]:
    """(variant name, where it came from). All variants share one architecture, so shapes cannot tell."""
    if info.metadata.get("ovi_variant") in VARIANTS:
        return info.metadata["ovi_variant"], "file metadata"
    name = info.path.name
    if name == FP8_FILENAME:
        return "720x720_5s", "file name"
    for v in VARIANTS.values():
        if name == v.filename:
            return v.name, "file name"
    low = name.lower()
    if "10s" in low and "960" in low:
        return "960x960_10s", "file name"
    if "960" in low:
        return "960x960_5s", "file name"
    if "720" in low:
        return "720x720_5s", "file name"
    return DEFAULT_VARIANT, "default"


def _check_keys(model: nn.Module, info: CheckpointInfo) -> None:
    want = {k: tuple(p.shape) for k, p in model.state_dict(keep_vars=True).items()}
    missing = [k for k in want if k not in info.shapes]
    unexpected = [k for k in info.shapes if k not in want]
    wrong = [f"{k}: file {list(info.shapes[k])}, model {list(want[k])}" for k in want
             if k in info.shapes and info.shapes[k] != want[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:2])})")
    if problems:
        raise WrongFileError(f"{info.path.name} does not match the Ovi fused model: {'; '.join(problems)}. "
                             f"The file may be incomplete or of another model; use {GET_WEIGHTS}")


# ---- loading ----------------------------------------------------------------------------------------------
def _is_matmul_weight(name: str, t: torch.Tensor) -> bool:
    return ".blocks." in name and name.endswith(".weight") and t.dim() == 2


_SCAN_CHUNK = 1 << 22  # elements per pass: bounded temporaries whatever the tensor size
# A value is NaN or infinite when all its exponent bits are set (e4m3fn: exponent and mantissa, its only NaN; it has
# no infinity): checked on the bits as integers, several times faster than isfinite on 16- and 8-bit floats.
_NONFINITE_BITS = {
    torch.float32: (torch.int32, 0x7F800000),
    torch.bfloat16: (torch.int16, 0x7F80),
    torch.float16: (torch.int16, 0x7C00),
    torch.float8_e4m3fn: (torch.uint8, 0x7F),
    torch.float8_e5m2: (torch.uint8, 0x7C),
}


class _FiniteScan:
    """Checks tensors for NaN/Inf in chunks, into one reused buffer per integer width: no allocation per tensor,
    so a load that scans does not fragment the heap (fresh temporaries between the model's small allocations
    grew the process by ~0.4x the file)."""

    def __init__(self):
        self._buffers: dict[torch.dtype, torch.Tensor] = {}

    def __call__(self, t: torch.Tensor) -> bool:
        if not t.is_floating_point():
            return True
        flat = t.detach().reshape(-1)
        bits = _NONFINITE_BITS.get(t.dtype)
        for chunk in flat.split(_SCAN_CHUNK):
            if bits is None:
                bad = not bool(torch.isfinite(chunk).all())
            else:
                int_dtype, mask = bits
                buf = self._buffers.get(int_dtype)
                if buf is None or buf.device != chunk.device:
                    buf = self._buffers[int_dtype] = torch.empty(_SCAN_CHUNK, dtype=int_dtype, device=chunk.device)
                out = buf[: chunk.numel()]
                bad = bool(torch.bitwise_and(chunk.view(int_dtype), mask, out=out).eq_(mask).any())
            if bad:
                return False
        return True


def check_finite_checkpoint(path: str | os.PathLike) -> int:
    """Read every tensor of a checkpoint and raise WrongFileError naming the first one with NaN or infinite values.

    Reads the whole file once (memory-mapped, one tensor at a time); returns the number of tensors checked."""
    path = Path(path)
    scan = _FiniteScan()
    with CheckpointFile(path) as f:
        for key in f.keys:
            interrupt.check("checking the model weights")
            if not scan(f.get(key)):
                raise WrongFileError(f"{path.name}: tensor {key} contains NaN or infinite values; the file is corrupt — "
                                     "download it again")
    return len(f.keys)


def load_fusion_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    weight_dtype: str = "auto",
    config: FusionConfig | None = None,
    variant: str | None = None,
    attention: str = "sdpa",
    check_finite: bool = False,
    operations=None,
) -> tuple[OviFusion, LoadInfo]:
    """Load a fused checkpoint into an OviFusion, tensor by tensor (memory-mapped: no copy when the stored dtype is
    the one kept and the device is the CPU).

    dtype: compute dtype. weight_dtype: how weights are kept in memory — "auto" (fp8 files stay fp8, others
    take the compute dtype), "bf16", "fp16", "fp32", or "fp8_e4m3fn" (block matmul weights cast to fp8 e4m3fn,
    upcast per layer when used; halves memory at some quality cost, as the reference's fp8 file).
    check_finite: scan every tensor for NaN/Inf (reads the whole file during the load; check-weights does it).
    operations: the layer classes to build the model from (see OviFusion).
    """
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {weight_dtype!r}")
    info = inspect_checkpoint(path)
    check_is_fusion_checkpoint(info)
    cfg = config or config_from_checkpoint(info)
    if variant is not None:
        from ovi_core.config import get_variant

        variant_name, source = get_variant(variant).name, "argument"
    else:
        variant_name, source = detect_variant(info)
        if source == "default":
            log.warning("%s: cannot tell the variant from the file name; assuming %s (set it explicitly if wrong)",
                        info.path.name, variant_name)
    with torch.device("meta"):
        model = OviFusion(cfg, operations=operations)
    _check_keys(model, info)

    store = WEIGHT_DTYPES[weight_dtype]
    device = torch.device(device)
    total_bytes = 0
    scan = _FiniteScan() if check_finite else None

    def place(name: str, tensor: torch.Tensor) -> None:
        nonlocal total_bytes
        if is_fp8(store):
            target = store if _is_matmul_weight(name, tensor) else dtype
        elif store is None:
            target = tensor.dtype if tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else dtype
        else:
            target = store
        tensor = tensor.to(device=device, dtype=target)  # no copy when it already is (a view of the file's map)
        if scan is not None and not scan(tensor):
            raise WrongFileError(f"{info.path.name}: tensor {name} contains NaN or infinite values; the file is corrupt "
                                 "— download it again")
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
        total_bytes += tensor.numel() * tensor.element_size()

    with CheckpointFile(info.path) as f:
        for name, file_key in info.file_keys.items():
            interrupt.check("loading the model weights")
            place(name, f.get(file_key))

    model.set_compute_dtype(dtype)
    model.set_attention_backend(attention)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    log.info("loaded %s: variant %s (%s), %s parameters, %.2f GB in memory", info.path.name, variant_name, source,
             f"{params:,}", total_bytes / 1e9)
    return model, LoadInfo(variant_name, source, cfg, info.is_fp8 or is_fp8(store), params, total_bytes)


def save_fusion_checkpoint(model: OviFusion, path: str | os.PathLike, variant: str | None = None,
                           dtype: torch.dtype | None = None) -> None:
    """Write a model in the released layout (atomically), with its config and variant as metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    sd = {k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in model.state_dict().items()}
    meta = {"ovi_config": json.dumps(model.cfg.to_reference_json())}
    if variant:
        meta["ovi_variant"] = variant
    tmp = path.with_name(path.name + ".partial")
    save_file(sd, str(tmp), metadata=meta)
    os.replace(tmp, path)


def init_weights_seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic random weights (the golden set's recipe), drawn in state_dict order.

    1-D '*weight' (norm scales) = 1 + 0.1 N; '*bias' = 0.02 N; '*modulation' = 0.1 N;
    other weights = N * min(0.1, max(0.02, 1/sqrt(fan_in))). Used by the demo model and tests.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict(keep_vars=True).items():
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("modulation"):
                v = 0.1 * n
            elif name.endswith("bias"):
                v = 0.02 * n
            elif name.endswith("weight") and p.dim() == 1:
                v = 1 + 0.1 * n
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                v = n * min(0.1, max(0.02, fan_in**-0.5))
            if p.is_meta:
                module_name, _, attr = name.rpartition(".")
                model.get_submodule(module_name)._parameters[attr] = nn.Parameter(v, requires_grad=False)
            else:
                p.copy_(v)
    return model
