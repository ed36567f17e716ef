"""Decoder timings and peak memory on CPU (random weights; numbers for the docs, not a test).

    python benchmarks/bench_decoders.py                       # video tiled vs untiled, then audio
    python benchmarks/bench_decoders.py --video-frames 31 --latent 32x32 --dec-dim 32 --tile 24x24
    python benchmarks/bench_decoders.py --only audio

Video: a Wan2.2-shaped VAE decoder with a reduced channel width (--dec-dim; the released model has 256) decodes a
latent of --video-frames latent frames (31 = a 5 s clip), untiled and tiled, each in a fresh process so that the
peak RSS belongs to that run alone. Audio: the full-size MMAudio VAE decoder + BigVGAN decode --audio-latents
latents (157 = 5 s). Reported: wall time, peak RSS, and RSS before decoding (model + input + output buffer).
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
from benchmarks._common import peak_mb, status_mb  # noqa: E402


def _pair(text: str) -> tuple[int, int]:
    a, b = text.lower().split("x")
    return int(a), int(b)


def run_video(args) -> dict:
    import torch

    from ovi_core.wan_vae import WanVAEConfig, WanVideoVAE, _init_like_golden

    torch.set_num_threads(args.threads)
    vae = WanVideoVAE(WanVAEConfig(dec_dim=args.dec_dim), with_encoder=False)
    _init_like_golden(vae, 0)
    vae.eval().requires_grad_(False)
    h, w = _pair(args.latent)
    z = torch.randn(1, 48, args.video_frames, h, w, generator=torch.Generator().manual_seed(0))
    tile = _pair(args.tile) if args.tile_run else None
    before = status_mb("VmRSS")
    t = time.perf_counter()
    frames = vae.decode(z, tile=tile, tile_overlap=args.overlap)
    seconds = time.perf_counter() - t
    return {
        "what": f"video {'tiled ' + args.tile + ' overlap ' + str(args.overlap) if tile else 'untiled'}",
        "shape": list(frames.shape),
        "seconds": round(seconds, 2),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak_mb(), 1),
        "output_mb": round(frames.numel() * 4 / 2**20, 1),
    }


def run_audio(args) -> dict:
    import torch

    from ovi_core.bigvgan import BigVGAN, BigVGANConfig
    from ovi_core.mmaudio_vae import AudioDecoder, MelVAEConfig, MelVAEDecoder

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    vae, voc = MelVAEDecoder(MelVAEConfig.full()), BigVGAN(BigVGANConfig.full())
    with torch.no_grad():
        for p in list(vae.parameters()) + [p for n, p in voc.named_parameters() if n.endswith("weight")]:
            fan_in = p[0].numel() if p.dim() else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
    vae.normalize_weights_()
    decoder = AudioDecoder(vae.eval(), voc.eval())
    z = torch.randn(1, 20, args.audio_latents, generator=g)
    before = status_mb("VmRSS")
    t = time.perf_counter()
    mel = decoder.decode_mel(z)
    t_mel = time.perf_counter() - t
    wav = decoder.vocoder(mel)
    seconds = time.perf_counter() - t
    return {
        "what": f"audio {args.audio_latents} latents (full-size VAE + BigVGAN)",
        "shape": list(wav.shape),
        "seconds": round(seconds, 2),
        "vae_seconds": round(t_mel, 2),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak_mb(), 1),
        "audio_seconds": round(wav.shape[-1] / 16000, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("video", "audio"), default=None)
    ap.add_argument("--video-frames", type=int, default=31)
    ap.add_argument("--latent", default="32x32", help="latent height x width (pixels = 16x)")
    ap.add_argument("--dec-dim", type=int, default=32, help="decoder base width (released: 256)")
    ap.add_argument("--tile", default="24x24", help="tile in latent pixels for the tiled run")
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--audio-latents", type=int, default=157)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--child", choices=("video", "audio"), help=argparse.SUPPRESS)
    ap.add_argument("--tile-run", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        print(json.dumps(run_video(args) if args.child == "video" else run_audio(args)))
        return

    base = [
        sys.executable,
        __file__,
        "--video-frames",
        str(args.video_frames),
        "--latent",
        args.latent,
        "--dec-dim",
        str(args.dec_dim),
        "--tile",
        args.tile,
        "--overlap",
        str(args.overlap),
        "--audio-latents",
        str(args.audio_latents),
        "--threads",
        str(args.threads),
    ]
    runs = []
    if args.only in (None, "video"):
        runs += [base + ["--child", "video"], base + ["--child", "video", "--tile-run"]]
    if args.only in (None, "audio"):
        runs += [base + ["--child", "audio"]]
    print(f"CPU, {args.threads} threads, torch decoders with random weights; load average {os.getloadavg()[0]:.1f}")
    for cmd in runs:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"benchmark run failed: {' '.join(cmd[2:])}\n{proc.stderr}")
        print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
