"""Peak memory of loading a fused checkpoint (streamed vs naive) and the time of one fused forward, on CPU.

    python benchmarks/bench_load.py                    # ~2.3 GB synthetic checkpoint in /tmp, deleted afterwards
    python benchmarks/bench_load.py --layers 2 --skip-forward --keep

1. Writes a synthetic fused checkpoint in the released layout (video_model.* / audio_model.*, bf16 on disk) at a
   scaled-down width (default dim 2048, ffn 8192, 16 heads, 6 fused layers: ~1.15 B parameters, ~2.3 GB).
2. In separate processes (so each peak belongs to one method) loads it
     streamed     ovi_core.weights.load_fusion_model(path, dtype=bf16): meta model, tensors streamed in one by one
     streamed-fp8 the same with weight_dtype="fp8_e4m3fn" (block matmul weights kept as 1 byte)
     reference    what the reference does: meta model + safetensors load_file + load_state_dict(assign=True)
     naive        a normally built model (float32 init) + safetensors load_file + load_state_dict
   then reads one element per page of every weight (as a forward would). Reported per child: ru_maxrss, the peak
   RSS of the load itself (VmHWM reset after the imports, minus the RSS before loading) and the RSS after it,
   also as multiples of the file size.
3. Times one fused forward (text prepared once, not timed) at a medium config: dim 512, ffn 2048, 8 heads,
   4 fused layers, video latent [48, 5, 16, 16] (320 tokens), 40 audio latents; float32 and bfloat16.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._common import peak_mb, reset_peak, status_mb, touch_weights, write_checkpoint  # noqa: E402


# ---- children ------------------------------------------------------------------------------------------------------
def child(mode: str, path: str) -> dict:
    import torch

    from ovi_core.fusion import OviFusion
    from ovi_core.weights import config_from_checkpoint, inspect_checkpoint, load_fusion_model

    torch.set_num_threads(1)
    reset = reset_peak()
    before = status_mb("VmRSS")
    start = time.perf_counter()
    if mode == "baseline":
        cfg = config_from_checkpoint(inspect_checkpoint(path))
        with torch.device("meta"):
            OviFusion(cfg)
    elif mode == "streamed":
        model, _ = load_fusion_model(path, dtype=torch.bfloat16)
    elif mode == "streamed-fp8":
        model, _ = load_fusion_model(path, dtype=torch.bfloat16, weight_dtype="fp8_e4m3fn")
    elif mode in ("reference", "naive"):
        from safetensors.torch import load_file

        cfg = config_from_checkpoint(inspect_checkpoint(path))
        if mode == "reference":
            with torch.device("meta"):
                model = OviFusion(cfg)
        else:
            model = OviFusion(cfg)  # float32 parameters, default init
        sd = load_file(path, device="cpu")
        model.load_state_dict(sd, strict=True, assign=mode == "reference")
        del sd
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - start
    if mode != "baseline":
        touch_weights(model)  # tensors still backed by the file's memory map (load_file + assign) are read now
    return {"mode": mode, "peak_mb": peak_mb(), "seconds": seconds, "rss_before_mb": before,
            "load_peak_mb": (status_mb("VmHWM") if reset else peak_mb()) - before, "rss_after_mb": status_mb("VmRSS"),
            "anon_mb": status_mb("RssAnon"), "file_mb": status_mb("RssFile")}


def run_child(mode: str, path: Path, *extra: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path), *extra], capture_output=True,
                         text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- forward timing ----------------------------------------------------------------------------------------------
def time_forward(threads: int, repeats: int) -> list[dict]:
    import torch

    from ovi_core.config import FusionConfig
    from ovi_core.fusion import OviFusion
    from ovi_core.weights import init_weights_seeded

    torch.set_num_threads(threads)
    cfg = FusionConfig.scaled(dim=512, ffn_dim=2048, num_heads=8, num_layers=4)
    model = init_weights_seeded(OviFusion(cfg), 0).eval()
    gen = torch.Generator().manual_seed(1)
    video = torch.randn(1, 48, 5, 16, 16, generator=gen)
    audio = torch.randn(1, 40, 20, generator=gen)
    ctx = [torch.randn(64, 4096, generator=gen)]
    t = torch.tensor([700])
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype).set_compute_dtype(dtype)
        text = model.prepare_text(ctx, ctx)
        model(video, audio, t, text=text)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(video, audio, t, text=text)
            times.append(time.perf_counter() - start)
        rows.append({"dtype": str(dtype).replace("torch.", ""), "median_ms": 1000 * statistics.median(times),
                     "min_ms": 1000 * min(times)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the synthetic checkpoint goes")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--ffn", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-forward", action="store_true")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads for the forward timing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "write":  # in a child too: a big parent would pass its peak RSS on to later children
            _, path, dim, ffn, heads, layers = args.child
            print(json.dumps({"params": write_checkpoint(Path(path), int(dim), int(ffn), int(heads), int(layers))["params"]}))
        else:
            print(json.dumps(child(*args.child)))
        return

    if not args.skip_load:
        path = args.dir / f"ovi_bench_{args.dim}x{args.layers}.safetensors"
        try:
            start = time.perf_counter()
            params = run_child("write", path, *map(str, (args.dim, args.ffn, args.heads, args.layers)))["params"]
            size_mb = path.stat().st_size / 2**20
            print(f"checkpoint: dim {args.dim}, ffn {args.ffn}, {args.heads} heads, {args.layers} fused layers: "
                  f"{params / 1e9:.3f} B parameters, {size_mb / 1024:.2f} GiB (bf16), written in "
                  f"{time.perf_counter() - start:.1f} s")
            base = run_child("baseline", path)
            print(f"baseline child (imports + meta model only): ru_maxrss {base['peak_mb']:.0f} MiB")
            print("maxrss-base: the child's ru_maxrss minus the baseline child's; load peak: peak RSS from just before the "
                  "load to after the first touch of every weight (VmHWM reset after the imports); after: RSS then")
            print(f"{'method':<13} {'ru_maxrss':>9} {'maxrss-base':>12} {'load peak':>15} {'after':>15} {'anon/file':>11} "
                  f"{'load s':>6}")

            def cell(mb: float) -> str:
                return f"{mb:6.0f} ({mb / size_mb:4.2f}x)"

            for mode in ("streamed", "streamed-fp8", "reference", "naive"):
                r = run_child(mode, path)
                print(f"{mode:<13} {r['peak_mb']:>9.0f} {cell(r['peak_mb'] - base['peak_mb']):>12} "
                      f"{cell(r['load_peak_mb']):>15} {cell(r['rss_after_mb'] - r['rss_before_mb']):>15} "
                      f"{r['anon_mb']:>5.0f}/{r['file_mb']:<5.0f} {r['seconds']:>6.1f}")
        finally:
            if not args.keep:
                path.unlink(missing_ok=True)

    if not args.skip_forward:
        print(f"fused forward, dim 512 / ffn 2048 / 8 heads / 4 layers, video [48, 5, 16, 16] + 40 audio latents, "
              f"{args.repeats} runs:")
        for threads in args.threads:
            for row in time_forward(threads, args.repeats):
                print(f"  {threads} thread(s) {row['dtype']:<9} median {row['median_ms']:7.1f} ms   "
                      f"min {row['min_ms']:7.1f} ms")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
