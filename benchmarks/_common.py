"""What the benchmark scripts share: the process's memory figures from /proc and ru_maxrss, the synthetic fused
checkpoint in the released layout, and the first touch of every weight."""

from __future__ import annotations

import json
import resource
from pathlib import Path


def status_mb(field: str) -> float:
    """A /proc/self/status memory field (VmRSS, VmHWM, RssAnon, RssFile, ...) in MiB; NaN where it is absent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    """The process's whole peak RSS (ru_maxrss; Linux: KiB) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so that the import's transient peak does not hide what is measured;
    False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def write_checkpoint(path: Path, dim: int, ffn: int, heads: int, layers: int, fp8: bool = False) -> dict:
    """Cheap random bf16 tensors with the released key names and shapes (with ``fp8``, the block matmul weights as
    float8_e4m3fn, as the rkfg fp8 file); returns the parameter count and one fused block's bytes (block 0 of both
    towers)."""
    import torch
    from safetensors.torch import save_file

    from ovi_core.config import FusionConfig
    from ovi_core.fusion import OviFusion

    cfg = FusionConfig.scaled(dim=dim, ffn_dim=ffn, num_heads=heads, num_layers=layers)
    with torch.device("meta"):
        model = OviFusion(cfg)
    gen = torch.Generator().manual_seed(0)
    tensors, block = {}, 0
    for name, p in model.state_dict(keep_vars=True).items():
        t = torch.empty(p.shape, dtype=torch.bfloat16)
        t.normal_(0.0, 0.02, generator=gen) if p.dim() > 1 else t.fill_(1.0 if name.endswith("weight") else 0.0)
        if fp8 and ".blocks." in name and t.dim() == 2:
            t = t.to(torch.float8_e4m3fn)
        tensors[name] = t
        if ".blocks.0." in name:
            block += t.numel() * t.element_size()
    save_file(tensors, str(path), metadata={"ovi_config": json.dumps(cfg.to_reference_json())})
    return {"params": sum(t.numel() for t in tensors.values()), "block_bytes": block}


def touch_weights(model) -> None:
    """Read one element per 4 KiB page of every weight, as a forward pass would: tensors still backed by the file's
    memory map only become resident when they are used."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.detach().reshape(-1)[:: 4096 // p.element_size()].float().sum()
