"""One sampler step of the fused model against its floor (the matmuls + attention it cannot avoid), on the CPU.

    python benchmarks/step.py [--threads 1] [--repeats 5] [--shapes small heavy wide] [--dtype fp32] [--json out.json]

A step is what ovi_core.sampler runs per denoising step: one forward of batch 2 (positive row, negative row with
skip-layer guidance on its fused block 1), text keys/values prepared once per generation (not timed). Shapes
(random weights, head dim 128, ffn = 4.67 x dim as the released model):
  small   dim 512,  3 fused layers, video latent [48, 5, 16, 16] = 320 tokens,   40 audio tokens
  heavy   dim 512,  3 fused layers, video latent [48, 9, 32, 32] = 2,304 tokens, 60 audio tokens
  wide    dim 1536, 2 fused layers, video latent [48, 4, 32, 32] = 1,024 tokens, 40 audio tokens
Reported per shape (each in its own process, so the peak memory is that shape's):
  step ms   wall time of the fastest step, cpu ms the process CPU time of that step
  share     the part of a profiled step spent inside the kernels the model needs: matmuls (aten::mm, addmm, bmm,
            baddbmm — what Linear and matmul run), attention (scaled_dot_product_attention's CPU kernel) and the
            audio tower's convolutions (its patch embedding is a real k=7 convolution, GEMM work); the rest is
            element-wise work, copies, casts and Python. torch.profiler time of those ops (with what they call
            themselves: addmm first copies its bias into the output) / profiled wall time.
  floor ms  (wall and CPU) the same kernels with the same shapes and strides, recorded from a step and replayed alone on fresh
            tensors (the best this step could do on this machine with these kernels)
  peak MB   peak RSS during the steps (VmHWM reset after the model is built) minus the RSS before them, and the
            process's whole peak (ru_maxrss: model + text cache + step)
cpu/floor compares CPU times (with one thread, CPU time is what an idle machine's wall time would be).
Timings: the minimum over --repeats (the least disturbed sample on a shared machine); the share comes from the
profiler and is much less sensitive to other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._common import peak_mb, reset_peak, status_mb  # noqa: E402

SHAPES = {  # name: (dim, layers, video latent (F, h, w), audio tokens)
    "small": (512, 3, (5, 16, 16), 40),
    "heavy": (512, 3, (9, 32, 32), 60),
    "wide": (1536, 2, (4, 32, 32), 40),
}
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
                 "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_flash_attention",
                 "aten::_scaled_dot_product_cudnn_attention")
CONV_OPS = ("aten::mkldnn_convolution", "aten::_convolution_mode", "aten::_slow_conv2d_forward",
            "aten::slow_conv3d_forward", "aten::_nnpack_spatial_convolution", "aten::convolution_overrideable")


def build(shape: str, dtype_name: str):
    import torch

    from ovi_core.config import FusionConfig
    from ovi_core.fusion import OviFusion
    from ovi_core.sampler import PromptEmbeddings, _GuidancePasses, make_noise
    from ovi_core.weights import init_weights_seeded

    dim, layers, (f, h, w), la = SHAPES[shape]
    ffn = round(dim * 14336 / 3072 / 256) * 256
    cfg = FusionConfig.scaled(dim=dim, ffn_dim=ffn, num_heads=dim // 128, num_layers=layers)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    model = init_weights_seeded(OviFusion(cfg), seed=0).eval().to(dtype).set_compute_dtype(dtype)
    g = torch.Generator().manual_seed(1)
    text = PromptEmbeddings(*(0.2 * torch.randn(n, 4096, generator=g) for n in (64, 12, 12)))
    video, audio = make_noise((48, f, h, w), (la, 20), seed=103)
    passes = _GuidancePasses(model, text, slg_layer=1, i2v=False, batched=True, cache_text=True)
    t = torch.tensor([952])
    step = lambda: passes(video[None], audio[None], t)  # noqa: E731  the batched positive/negative forward
    tokens = (f * (h // 2) * (w // 2), la)
    return model, step, tokens, cfg


# ---- the floor: record the kernels of one step, replay them alone -----------------------------------------------
def record_kernels(step):
    """[(op, [(size, stride, dtype) or value, ...])] of every matmul/attention/convolution a step dispatches."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    a = torch.ops.aten
    wanted = {a.mm.default, a.addmm.default, a.bmm.default, a.baddbmm.default,
              a._scaled_dot_product_flash_attention_for_cpu.default, a.convolution.default}
    calls = []

    def sig(x):
        if isinstance(x, torch.Tensor):
            return ("T", tuple(x.shape), tuple(x.stride()), x.dtype)
        if isinstance(x, (list, tuple)):
            return type(x)(sig(y) for y in x)
        return x

    class Rec(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in wanted:
                calls.append((func, sig(args), sig(kwargs or {})))
            return func(*args, **(kwargs or {}))

    with Rec():
        step()
    return calls


def replay_seconds(calls, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest replay."""
    import torch

    cache = {}

    def make(s):
        if isinstance(s, tuple) and s and s[0] == "T":
            if s not in cache:
                _, size, stride, dtype = s
                cache[s] = torch.empty_strided(size, stride, dtype=dtype).normal_(0, 0.1)
            return cache[s]
        if isinstance(s, (list, tuple)):
            return type(s)(make(y) for y in s)
        return s

    prepared = [(f, make(args), {k: make(v) for k, v in kw.items()}) for f, args, kw in calls]
    best, best_cpu = float("inf"), float("inf")
    with torch.no_grad():
        for _ in range(repeats + 1):
            start, cpu = time.perf_counter(), time.process_time()
            for f, args, kw in prepared:
                f(*args, **kw)
            best, best_cpu = min(best, time.perf_counter() - start), min(best_cpu, time.process_time() - cpu)
    return best, best_cpu


def profile_share(step) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    by = {e.key: e.self_cpu_time_total / 1e6 for e in events}
    total = {e.key: e.cpu_time_total / 1e6 for e in events}  # the kernels' own children count (addmm's bias copy)
    mm = sum(total.get(k, 0.0) for k in MATMUL_OPS)
    att = sum(total.get(k, 0.0) for k in ATTENTION_OPS)
    conv = sum(total.get(k, 0.0) for k in CONV_OPS)
    others = sorted(((v, k) for k, v in by.items() if k not in MATMUL_OPS + ATTENTION_OPS + CONV_OPS), reverse=True)
    return {"profiled_wall": wall, "mm": mm / wall, "attention": att / wall, "conv": conv / wall,
            "share": (mm + att + conv) / wall, "top_others": [(k, v / wall) for v, k in others[:8]]}


def run_shape(shape: str, threads: int, repeats: int, dtype_name: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    model, step, tokens, cfg = build(shape, dtype_name)
    with torch.no_grad():
        step()  # warm-up (allocator, oneDNN primitives)
        rss_before = status_mb("VmRSS")
        reset = reset_peak()
        walls, cpus = [], []
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            step()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        step_peak = (status_mb("VmHWM") - rss_before) if reset else float("nan")
        prof = min((profile_share(step) for _ in range(2)), key=lambda p: p["profiled_wall"])
        floor, floor_cpu = replay_seconds(record_kernels(step), repeats)
    best = min(range(repeats), key=lambda i: walls[i])
    return {"shape": shape, "dim": cfg.video.dim, "layers": cfg.num_layers, "tokens": tokens, "threads": threads,
            "dtype": dtype_name, "step_ms": 1000 * walls[best], "cpu_ms": 1000 * min(cpus),
            "floor_ms": 1000 * floor, "floor_cpu_ms": 1000 * floor_cpu, **prof, "step_peak_mb": step_peak,
            "maxrss_mb": peak_mb(),
            "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--top", action="store_true", help="print the largest other ops of each profile")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_shape(args.child, args.threads, args.repeats, args.dtype)))
        return 0
    rows = []
    for shape in args.shapes:
        out = subprocess.run([sys.executable, __file__, "--child", shape, "--threads", str(args.threads),
                              "--repeats", str(args.repeats), "--dtype", args.dtype],
                             capture_output=True, text=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
        if out.returncode:
            raise SystemExit(f"{shape} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{os.cpu_count()} CPUs on this machine, {args.threads} torch thread(s), {args.dtype}, min of {args.repeats}")
    print(f"{'shape':<6} {'dim':>5} {'layers':>6} {'video+audio tok':>15} {'step ms':>9} {'cpu ms':>9} "
          f"{'share':>6} {'(mm':>5} {'attn':>5} {'conv)':>5} {'floor ms':>9} {'floor cpu':>9} {'cpu/floor':>9} "
          f"{'step peak MB':>12} {'maxrss MB':>10} {'weights MB':>10}")
    for r in rows:
        print(f"{r['shape']:<6} {r['dim']:>5} {r['layers']:>6} {r['tokens'][0]:>9}+{r['tokens'][1]:<5} "
              f"{r['step_ms']:9.1f} {r['cpu_ms']:9.1f} {100 * r['share']:5.1f}% {100 * r['mm']:5.1f} "
              f"{100 * r['attention']:5.1f} {100 * r['conv']:5.1f} {r['floor_ms']:9.1f} {r['floor_cpu_ms']:9.1f} "
              f"{r['cpu_ms'] / r['floor_cpu_ms']:9.2f} {r['step_peak_mb']:12.0f} {r['maxrss_mb']:10.0f} "
              f"{r['weights_mb']:10.0f}")
        if args.top:
            print("        largest other ops: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["top_others"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
