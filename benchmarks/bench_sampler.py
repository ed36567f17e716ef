"""Per-step wall time of the joint sampler: the reference's naive loop vs ours, in one process, on the CPU.

    python benchmarks/bench_sampler.py [--steps 4] [--repeats 6] [--threads 2]

Medium config with random weights: dim 512, 4 fused layers (4 heads of 128, ffn 2048), video latent
[48, 5, 16, 16] (320 video tokens), 40 audio latents, prompt/negatives of 64/12/12 tokens (padded to 512 by the
model, as the reference does). Loops compared (unipc, guidance 4/3, SLG layer 2):
  naive           two forwards per step, text embedded and projected inside every forward (the reference)
  cached text     two forwards per step, text embeddings and cross-attention text K/V prepared once
  batched         one forward of batch 2 per step (SLG on the negative row only), text inside every forward
  ours            batched + cached text (sample_joint's default)
Modes are interleaved round by round so that machine noise hits them alike. Reported per mode:
  step ms    the fastest single step seen (time between two step callbacks; steps 2..N, so the once-per-run
             text preparation is not in it) — on a shared machine the minimum is the least disturbed sample
  run ms     the fastest whole run divided by the number of steps (includes the text preparation)
  cpu ms     process CPU time of the cheapest whole run divided by the steps: a measure of work that other
             processes disturb much less than wall time (with --threads 1 it is close to an idle machine's wall
             time; with more threads it includes their spin-waiting)
and the largest difference between each mode's final latents and the naive loop's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ovi_core.config import FusionConfig  # noqa: E402
from ovi_core.fusion import OviFusion  # noqa: E402
from ovi_core.sampler import PromptEmbeddings, make_noise, sample_joint  # noqa: E402
from ovi_core.weights import init_weights_seeded  # noqa: E402

MODES = {
    "naive": dict(batched_cfg=False, cache_text=False),
    "cached text": dict(batched_cfg=False, cache_text=True),
    "batched": dict(batched_cfg=True, cache_text=False),
    "ours": dict(batched_cfg=True, cache_text=True),
}


def timed_run(model, text, run: dict, flags: dict):
    """(final latents, whole-run seconds, whole-run CPU seconds, [seconds of steps 2..N])."""
    marks = []
    start, cpu_start = time.perf_counter(), time.process_time()
    out = sample_joint(model, text, **run, **flags, callback=lambda k, n, lat: marks.append(time.perf_counter()))
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return out, total, cpu, [b - a for a, b in zip(marks, marks[1:])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--video", type=int, nargs=3, default=(5, 16, 16), metavar=("F", "H", "W"))
    p.add_argument("--audio", type=int, default=40)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = FusionConfig.scaled(dim=args.dim, ffn_dim=4 * args.dim, num_heads=args.dim // 128, num_layers=args.layers)
    model = init_weights_seeded(OviFusion(cfg), seed=0).eval()
    g = torch.Generator().manual_seed(1)
    text = PromptEmbeddings(*(0.2 * torch.randn(n, 4096, generator=g) for n in (64, 12, 12)))
    video_noise, audio_noise = make_noise((48, *args.video), (args.audio, 20), seed=103)
    run = dict(video_noise=video_noise, audio_noise=audio_noise, solver="unipc", steps=args.steps,
               video_guidance=4.0, audio_guidance=3.0, slg_layer=min(2, args.layers - 1))

    for flags in MODES.values():  # warm-up
        sample_joint(model, text, **(run | {"steps": 1}), **flags)
    steps: dict[str, list[float]] = {m: [] for m in MODES}
    runs: dict[str, list[float]] = {m: [] for m in MODES}
    cpus: dict[str, list[float]] = {m: [] for m in MODES}
    finals = {}
    for _ in range(args.repeats):
        for mode, flags in MODES.items():
            finals[mode], total, cpu, per_step = timed_run(model, text, run, flags)
            runs[mode].append(total / args.steps)
            cpus[mode].append(cpu / args.steps)
            steps[mode] += per_step

    params = sum(p.numel() for p in model.parameters())
    print(f"model: dim {args.dim}, {args.layers} layers, {params / 1e6:.1f} M parameters, float32, "
          f"{torch.get_num_threads()} threads; video latent {[48, *args.video]}, audio latent [{args.audio}, 20]; "
          f"{args.steps} unipc steps x {args.repeats} rounds")
    base = [min(d["naive"]) for d in (steps, runs, cpus)]
    ref_v, ref_a = finals["naive"]
    head = "".join(f" {c:>8} {'speed-up':>9}" for c in ("step ms", "run ms", "cpu ms"))
    print(f"{'loop':<12}{head} {'max |d video|':>14} {'max |d audio|':>14}")
    for mode in MODES:
        cols = "".join(f" {1000 * min(d[mode]):8.1f} {b / min(d[mode]):8.2f}x" for d, b in zip((steps, runs, cpus), base))
        v, a = finals[mode]
        dv, da = (v - ref_v).abs().max().item(), (a - ref_a).abs().max().item()
        print(f"{mode:<12}{cols} {dv:14.2e} {da:14.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
