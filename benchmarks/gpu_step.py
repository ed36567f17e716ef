"""One sampler step of the real-size fused model on a CUDA GPU, per attention backend: time and peak VRAM.

    python benchmarks/gpu_step.py [--variant 720x720_5s] [--weight-dtype bf16|fp8] [--backends sdpa flash_attn sage]
                                  [--repeats 3] [--layers 30] [--json out.json]

A step is what ovi_core.sampler runs per denoising step: one forward of batch 2 (positive row, negative row with
skip-layer guidance on fused block 11), the text keys/values prepared once (not timed). Random weights (the numbers
do not matter, the shapes do), bf16 compute. ``--weight-dtype fp8`` keeps the weights float8_e4m3fn in memory (the
11.7 GB fp8 file's footprint; each layer upcasts, or runs torch._scaled_mm where the GPU has fp8 tensor cores).
``--layers N`` builds only N of the 30 fused blocks (a smaller GPU); the FLOPs reported follow.

Reported per backend: step ms (fastest of --repeats), achieved TFLOP/s (the step's FLOPs, ``forward_flops`` below,
over its time), peak VRAM (torch.cuda.max_memory_allocated during the step, weights included), and the clip time
this implies (50 steps). A backend that cannot run (not installed, GPU too old) is named with the reason and skipped.
Without CUDA the script says so and exits 0 (there is nothing to measure on the CPU: benchmarks/step.py is the CPU
benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ovi_core.config import FusionConfig, get_variant  # noqa: E402
from ovi_core.sizes import latent_shapes  # noqa: E402

STEPS_PER_CLIP = 50  # Ovi's default; two forwards (rows) per step: 100 forwards per clip


def token_counts(variant_name: str) -> tuple[int, int, tuple[int, ...]]:
    """(video tokens, audio tokens, video latent shape) of a text-to-video clip at the variant's own size."""
    s = latent_shapes(get_variant(variant_name), *(2 * [int(get_variant(variant_name).target_area ** 0.5)]))
    _, f, h, w = s.video
    return f * (h // 2) * (w // 2), s.audio[0], s.video


def forward_flops(cfg: FusionConfig, video_tokens: int, audio_tokens: int, layers: int | None = None) -> dict:
    """FLOPs of one forward of one row (2 per multiply-add), by kind. Per fused block and tower (tokens L, the other
    tower's L', width d, FFN width f, text 512 tokens):
      projections  self-attention q, k, v, o: 4·L·d²; cross-attention q, o: 2·L·d²; the fusion keys/values of the
                   other stream: 2·L'·d²; FFN: 2·L·d·f   (the text keys/values are computed once per clip: not counted)
      attention    self: 2·L²·d (QKᵀ and AV); text: 2·L·512·d; fusion: 2·L·L'·d
    The embeddings, heads, norms and modulation are < 0.1 % and left out."""
    d, f, t = cfg.video.dim, cfg.video.ffn_dim, cfg.video.text_len
    n = cfg.num_layers if layers is None else layers

    def tower(L, Lo):
        proj = 4 * L * d * d + 2 * L * d * d + 2 * Lo * d * d + 2 * L * d * f
        attn = 2 * L * L * d + 2 * L * t * d + 2 * L * Lo * d
        return proj, attn

    pv, av = tower(video_tokens, audio_tokens)
    pa, aa = tower(audio_tokens, video_tokens)
    proj, attn = 2 * n * (pv + pa), 2 * n * (av + aa)
    return {"projections": proj, "attention": attn, "total": proj + attn}


def _random_model(cfg: FusionConfig, weight_dtype: torch.dtype, device: torch.device):
    from ovi_core.fusion import OviFusion

    with torch.device("meta"):
        model = OviFusion(cfg)
    model = model.to(weight_dtype).to_empty(device=device)
    g = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, device=device, dtype=torch.bfloat16).mul_(0.02))
    return model.set_compute_dtype(torch.bfloat16).eval()


def measure(model, backend: str, video_shape, audio_tokens: int, repeats: int, device) -> dict:
    from ovi_core.attention import resolve_backend

    real = resolve_backend(backend, device)
    if real != backend:
        return {"backend": backend, "skipped": f"unavailable (see the warning above); {real} runs instead"}
    model.attention_backend = backend
    g = torch.Generator(device).manual_seed(1)
    video = torch.randn(2, *video_shape, generator=g, device=device)
    audio = torch.randn(2, audio_tokens, 20, generator=g, device=device)
    ctx = torch.randn(2, 100, 4096, generator=g, device=device)
    text = model.prepare_text(ctx, ctx, batch=2, device=device)
    t, skip = torch.tensor([900.0, 900.0], device=device), torch.tensor([False, True])
    slg = min(11, model.cfg.num_layers - 1)
    times = []
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats + 1):  # the first is a warm-up (kernel selection, allocator)
        start = time.perf_counter()
        model(video, audio, t, text=text, slg_layer=slg, skip_mask=skip)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {"backend": backend, "step_s": min(times[1:]), "peak_vram_gb": torch.cuda.max_memory_allocated(device) / 2**30}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="720x720_5s")
    p.add_argument("--weight-dtype", choices=("bf16", "fp8"), default="bf16")
    p.add_argument("--backends", nargs="+", default=["sdpa", "flash_attn", "sage"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layers", type=int, default=None, help="fused blocks to build (default: all 30)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    video_tokens, audio_tokens, video_shape = token_counts(args.variant)
    cfg = FusionConfig.full()
    if args.layers:
        cfg = FusionConfig.scaled(dim=cfg.video.dim, ffn_dim=cfg.video.ffn_dim, num_heads=cfg.video.num_heads,
                                  num_layers=args.layers)
    flops = forward_flops(cfg, video_tokens, audio_tokens)
    print(f"{args.variant}: {video_tokens} video + {audio_tokens} audio tokens, {cfg.num_layers} fused blocks: "
          f"{flops['total'] / 1e12:.1f} TFLOP per forward of one row ({flops['projections'] / 1e12:.1f} projections, "
          f"{flops['attention'] / 1e12:.1f} attention); a step = 2 rows, a clip = {STEPS_PER_CLIP} steps")
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark measures GPU steps only (benchmarks/step.py is the CPU one); nothing to do")
        return 0

    device = torch.device("cuda")
    print(f"GPU: {torch.cuda.get_device_name(device)}, capability {torch.cuda.get_device_capability(device)}, "
          f"torch {torch.__version__}; weights {args.weight_dtype}")
    model = _random_model(cfg, torch.float8_e4m3fn if args.weight_dtype == "fp8" else torch.bfloat16, device)
    rows = []
    with torch.no_grad():
        for backend in args.backends:
            r = measure(model, backend, video_shape, audio_tokens, args.repeats, device)
            rows.append(r)
            if "skipped" in r:
                print(f"  {backend:10s} skipped: {r['skipped']}")
                continue
            tflops = 2 * flops["total"] / r["step_s"] / 1e12
            print(f"  {backend:10s} step {r['step_s'] * 1e3:8.0f} ms  {tflops:6.0f} TFLOP/s  peak VRAM "
                  f"{r['peak_vram_gb']:5.1f} GB  clip ({STEPS_PER_CLIP} steps) {r['step_s'] * STEPS_PER_CLIP:6.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"variant": args.variant, "flops": flops, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
