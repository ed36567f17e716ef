"""Checkpoint files of the Ovi fusion model: inspection, layout detection and streamed loading.

The released files (chetwinlow1/Ovi model.safetensors, model_960x960.safetensors,
model_960x960_10s.safetensors; rkfg/Ovi-fp8_quantized model_fp8_e4m3fn.safetensors) use the module names of
ovi_core.fusion.OviFusion directly. Which layout a file has (also kijai's ComfyUI-WanVideoWrapper files: one file, or
the video and audio towers in two files that are joined here) is decided by the file-kind table, ovi_core.filekinds.
Loading builds the model on the meta device and assigns the file's tensors to
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
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from ovi_core import filekinds, interrupt
from ovi_core.checkpoint_io import CheckpointFile
from ovi_core.config import DEFAULT_VARIANT, FP8_FILENAME, VARIANTS, FusionConfig, Variant, get_variant
from ovi_core.errors import WrongFileError
from ovi_core.fusion import OviFusion
from ovi_core.knobs import WEIGHT_DTYPES, is_fp8

log = logging.getLogger(__name__)

GET_WEIGHTS = ("the fused file model.safetensors (720x720_5s), model_960x960.safetensors or "
               "model_960x960_10s.safetensors from huggingface.co/chetwinlow1/Ovi, or model_fp8_e4m3fn.safetensors "
               "from huggingface.co/rkfg/Ovi-fp8_quantized")


@dataclass
class CheckpointInfo:
    """What a checkpoint holds, read without loading its tensors (one file, or the two halves of a split model)."""

    path: Path
    shapes: dict[str, tuple[int, ...]]  # released key -> shape
    dtypes: dict[str, str]  # released key -> dtype name as stored
    file_keys: dict[str, str]  # released key -> key in the file
    metadata: dict[str, str] = field(default_factory=dict)
    format: str = "safetensors"
    kind: filekinds.Identified | None = None  # the row of filekinds.KINDS the file matched
    files: dict[str, Path] = field(default_factory=dict)  # released key -> file, where not `path` (split models)
    scales: dict[str, tuple[Path, str]] = field(default_factory=dict)  # weight key -> (file, key) of its fp8 scale

    @property
    def fp8_dtype(self) -> torch.dtype | None:
        """The file's fp8 dtype (e4m3fn or e5m2) when its weights stay fp8 in memory; None otherwise (also for scaled
        fp8 files: they are dequantised on load)."""
        return None if self.scales else filekinds.fp8_dtype(self.dtypes.values())

    @property
    def is_fp8(self) -> bool:
        """fp8 weights that stay fp8 in memory (scaled fp8 files are dequantised on load)."""
        return self.fp8_dtype is not None

    def file_of(self, key: str) -> Path:
        return self.files.get(key, self.path)


@dataclass
class LoadInfo:
    variant: str
    variant_source: str  # "argument", "file metadata", "file name" or "default"
    config: FusionConfig
    is_fp8: bool
    parameters: int
    bytes_in_memory: int


_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Keys, shapes and dtypes of a fused-model file (.safetensors, or .pt/.pth/.ckpt as the reference accepts), in
    the released names; for one half of a split model (kijai's towers), of both halves joined."""
    path = Path(path)
    if not path.is_file():
        raise WrongFileError(f"{path} does not exist; Ovi needs {GET_WEIGHTS}")
    found = filekinds.identify(path)
    halves = [found]
    if found.kind.part == "fusion" and found.kind.partner:
        halves.append(filekinds.find_partner(found))
    info = CheckpointInfo(path, {}, {}, {}, dict(found.header.metadata), found.header.format, found)
    for half in halves:
        h = half.header
        info.metadata = {**h.metadata, **info.metadata}
        for ours, file_key in half.key_map().items():
            if file_key.endswith("scaled_fp8"):  # the marker of a scaled fp8 file, not a weight
                continue
            if file_key.endswith(_SCALE_SUFFIXES):
                info.scales[ours.rpartition(".")[0] + ".weight"] = (h.path, file_key)
                continue
            info.shapes[ours], info.dtypes[ours], info.file_keys[ours] = h.shapes[file_key], h.dtypes[file_key], file_key
            if h.path != path:
                info.files[ours] = h.path
    return info


# ---- recognising the file ----------------------------------------------------------------------------------
def check_is_fusion_checkpoint(info: CheckpointInfo) -> None:
    """Raise WrongFileError describing the file when it is not an Ovi fused checkpoint."""
    found = info.kind or filekinds.identify(filekinds.Header(info.path.name, info.shapes, info.dtypes))
    name = info.path.name
    if found.kind.part == "fusion":
        return
    if found.kind.name == "ovi_one_tower":
        has_v = any(k.startswith(found.prefix + "video_model.") for k in found.header.keys)
        have, miss = ("video_model.*", "audio_model.*") if has_v else ("audio_model.*", "video_model.*")
        raise WrongFileError(f"{name} has {have} keys but no {miss} keys: it holds only one tower of Ovi. Use {GET_WEIGHTS}")
    if found.kind is filekinds.UNKNOWN:
        sample = ", ".join(found.header.keys[:3]) or "no tensors at all"
        raise WrongFileError(f"{name} is not an Ovi fused checkpoint (first keys: {sample}). Use {GET_WEIGHTS}")
    raise WrongFileError(f"{filekinds.wrong_part_message(found, 'fusion', name)}. "
                         f"The Ovi model loader needs {GET_WEIGHTS}")


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
    cfg = FusionConfig.scaled(dim=dim, ffn_dim=ffn, num_heads=num_heads, num_layers=layers)
    if (in_v, out_v, in_a, out_a) != (cfg.video.in_dim, cfg.video.out_dim, cfg.audio.in_dim, cfg.audio.out_dim):
        cfg = replace(cfg, video=replace(cfg.video, in_dim=in_v, out_dim=out_v),
                      audio=replace(cfg.audio, in_dim=in_a, out_dim=out_a))
    return cfg


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


_WARNED: set[Path] = set()


def resolve_variant(info: CheckpointInfo, variant: str | Variant | None = None) -> tuple[str, str]:
    """(variant, source): the argument when given, else detect_variant; says once per file when it had to assume."""
    if variant is not None:
        return get_variant(variant).name, "argument"
    name, source = detect_variant(info)
    if source == "default" and info.path not in _WARNED:
        _WARNED.add(info.path)
        log.warning("%s: cannot tell the model variant from the file; assuming %s (choose it explicitly if wrong)",
                    info.path.name, name)
    return name, source


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

    Reads the whole file once (memory-mapped, one tensor at a time), and the other half of a split model too;
    returns the number of tensors checked."""
    path = Path(path)
    scan = _FiniteScan()
    count = 0
    for p in dict.fromkeys([path, *inspect_checkpoint(path).files.values()]):
        with CheckpointFile(p) as f:
            for key in f.keys:
                interrupt.check("checking the model weights")
                if not scan(f.get(key)):
                    raise WrongFileError(f"{p.name}: tensor {key} contains NaN or infinite values; the file is corrupt "
                                         "— download it again")
            count += len(f.keys)
    return count


def load_fusion_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    weight_dtype: str = "auto",
    config: FusionConfig | None = None,
    variant: str | Variant | None = None,
    attention: str = "sdpa",
    check_finite: bool = False,
    operations=None,
    info: CheckpointInfo | None = None,
) -> tuple[OviFusion, LoadInfo]:
    """Load a fused checkpoint into an OviFusion, tensor by tensor (memory-mapped: no copy when the stored dtype is
    the one kept and the device is the CPU).

    dtype: compute dtype. weight_dtype: how weights are kept in memory — "auto" (fp8 files stay fp8, others
    take the compute dtype), "bf16", "fp16", "fp32", or "fp8_e4m3fn" (block matmul weights cast to fp8 e4m3fn,
    upcast per layer when used; halves memory at some quality cost, as the reference's fp8 file).
    check_finite: scan every tensor for NaN/Inf (reads the whole file during the load; check-weights does it).
    operations: the layer classes to build the model from (see OviFusion).
    info: the file's inspect_checkpoint, when the caller already has it (the header is not read again).
    path may be either half of a split model (kijai's video / audio tower files): the other half is found next to it.
    Scaled fp8 weights (a per-layer scale) are dequantised to the compute dtype as they are read.
    """
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {weight_dtype!r}")
    if info is None:
        info = inspect_checkpoint(path)
    check_is_fusion_checkpoint(info)
    cfg = config or config_from_checkpoint(info)
    variant_name, source = resolve_variant(info, variant)
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
            target = tensor.dtype if is_fp8(tensor.dtype) else dtype
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

    files = {p: CheckpointFile(p) for p in {info.path, *info.files.values()}}
    try:
        for name, file_key in info.file_keys.items():
            interrupt.check("loading the model weights")
            tensor = files[info.file_of(name)].get(file_key)
            if name in info.scales:  # scaled fp8: weight x scale, in the compute dtype
                scale_path, scale_key = info.scales[name]
                scale = files.setdefault(scale_path, CheckpointFile(scale_path)).get(scale_key).float()
                if scale.numel() > 1:
                    scale = scale.reshape(tensor.shape[0], *([1] * (tensor.dim() - 1)))
                tensor = (tensor.float() * scale).to(dtype)
            place(name, tensor)
    finally:
        for f in files.values():
            f.close()

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
