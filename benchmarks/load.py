"""Loading a fused checkpoint against reading the same file: time and peak memory, bf16 and fp8 files, on the CPU.

    python benchmarks/load.py [--dim 2048 --ffn 8192 --heads 16 --layers 8] [--repeats 2] [--dir /tmp] [--keep]

1. Writes two synthetic fused checkpoints in the released layout at a scaled width (default dim 2048, ffn 8192,
   16 heads, 8 fused layers: 1.53 B parameters): bf16 (~3.1 GB) and fp8 (block matmul weights float8_e4m3fn,
   the rest bf16, as the rkfg fp8 file; ~1.8 GB). Deleted afterwards unless --keep.
2. Per file, each measurement in its own process (so each peak belongs to one job), the file's pages evicted from
   the page cache first (posix_fadvise DONTNEED: "cold-ish", the disk really is read; also run warm):
     read        plain file reads of the whole file into one reused 64 MiB buffer: the disk's speed
     load        ovi_core.weights.load_fusion_model(path, dtype=bf16) (fp8 weights stay fp8), then one element of
                 every 4 KiB page of every weight is touched, as the first forward does — memory-mapped weights are
                 only read from disk then, so "load + touch" is the time to compare with "read"
     load+check  the same with check_finite=True (the NaN/Inf scan that check-weights runs)
   Reported: seconds (load call, load + touch), ratio to the read time, peak RSS of the load (VmHWM reset after the
   imports, minus the RSS before) as a multiple of the file size, and one fused block's size for the
   "<= 1.1 x file + one block" goal. Minimum over --repeats.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._common import reset_peak, status_mb, touch_weights, write_checkpoint  # noqa: E402

CHUNK = 64 * 2**20


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache (only this file's; no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ---- children ------------------------------------------------------------------------------------------------------
def child(mode: str, path: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from ovi_core.weights import load_fusion_model

    reset = reset_peak()
    before = status_mb("VmRSS")
    start = time.perf_counter()
    touched = None
    if mode == "read":
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            while f.readinto(view):
                pass
        seconds = time.perf_counter() - start
    else:
        kw = {}
        if "check_finite" in inspect.signature(load_fusion_model).parameters:
            kw["check_finite"] = mode == "load+check"
        elif mode == "load+check":
            return {"mode": mode, "skipped": True}
        model, _ = load_fusion_model(path, dtype=torch.bfloat16, **kw)
        seconds = time.perf_counter() - start
        touch_weights(model)
        touched = time.perf_counter() - start
    return {"mode": mode, "seconds": seconds, "touched": touched,
            "peak_mb": (status_mb("VmHWM") if reset else float("nan")) - before,
            "rss_after_mb": status_mb("VmRSS") - before, "file_mb": status_mb("RssFile"),
            "anon_mb": status_mb("RssAnon")}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--dir", type=Path, default=Path("/tmp"))
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--ffn", type=int, default=8192)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--kinds", nargs="+", default=["bf16", "fp8"], choices=["bf16", "fp8"])
    p.add_argument("--keep", action="store_true", help="keep the checkpoints")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    if args.child:
        if args.child[0] == "write":
            _, path, dim, ffn, heads, layers, kind = args.child
            print(json.dumps(write_checkpoint(Path(path), int(dim), int(ffn), int(heads), int(layers), kind == "fp8")))
        else:
            print(json.dumps(child(*args.child)))
        return

    rows = []
    print(f"{os.cpu_count()} CPUs, 1 torch thread; dim {args.dim}, ffn {args.ffn}, {args.layers} fused layers; "
          f"min of {args.repeats}; cold = the file's pages evicted before each run")
    print(f"{'file':<5} {'GB':>5} {'job':<11} {'cache':<5} {'call s':>7} {'+touch s':>8} {'x read':>7} "
          f"{'peak/file':>9} {'after/file':>10} {'(file+block)/file':>17}")
    for kind in args.kinds:
        path = args.dir / f"ovi_load_bench_{kind}.safetensors"
        try:
            info = run_child("write", str(path), *map(str, (args.dim, args.ffn, args.heads, args.layers)), kind)
            size_mb = path.stat().st_size / 2**20
            for cache in ("cold", "warm"):
                best = {}
                for _ in range(args.repeats):
                    for mode in ("read", "load", "load+check"):
                        if cache == "cold":
                            evict(path)
                        else:
                            run_child("read", str(path))
                        r = run_child(mode, str(path))
                        if r.get("skipped"):
                            continue
                        total = r["touched"] or r["seconds"]
                        if mode not in best or total < (best[mode]["touched"] or best[mode]["seconds"]):
                            best[mode] = r
                read = best["read"]["seconds"]
                for mode, r in best.items():
                    total = r["touched"] or r["seconds"]
                    row = {"file": kind, "gb": size_mb / 1024, "mode": mode, "cache": cache, **r,
                           "x_read": total / read, "peak_ratio": r["peak_mb"] / size_mb,
                           "after_ratio": r["rss_after_mb"] / size_mb,
                           "goal_ratio": (1.1 * size_mb + info["block_bytes"] / 2**20) / size_mb}
                    rows.append(row)
                    touch = f"{r['touched']:8.2f}" if r["touched"] is not None else f"{'':8}"
                    print(f"{kind:<5} {size_mb / 1024:5.2f} {mode:<11} {cache:<5} {r['seconds']:7.2f} {touch} "
                          f"{row['x_read']:7.2f} {row['peak_ratio']:9.3f} {row['after_ratio']:10.3f} "
                          f"{row['goal_ratio']:17.3f}")
        finally:
            if not args.keep:
                path.unlink(missing_ok=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
