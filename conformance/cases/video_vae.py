"""Golden cases for the Wan2.2 video VAE: video_decode_case_* and video_encode_case_*.

The tiny VAE weights sit next to the cases: `tiny_wan22_vae_decoder.safetensors` (decoder half) and
`tiny_wan22_vae_encoder.safetensors` (encoder half, disjoint keys); together they are one Wan VAE state dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from conformance.runner import CaseOutcome
from ovi_core.wan_vae import WAN22_LATENT_MEAN, WAN22_LATENT_STD, video_vae_from_state_dict

from .common import load_case, max_abs_err

TOLERANCE = 1e-4  # float32 implementation vs the float32 reference run


def _tiny_vae(golden_dir: Path, with_encoder: bool):
    sd = load_file(str(golden_dir / "tiny_wan22_vae_decoder.safetensors"))
    if with_encoder:
        sd.update(load_file(str(golden_dir / "tiny_wan22_vae_encoder.safetensors")))
    return video_vae_from_state_dict(sd, dtype=torch.float32, source="tiny golden VAE")


def _check_constants(t: dict) -> float:
    """The case stores the latent statistics it used; they must be the released ones we hard-code."""
    return max(
        (t["in.latent_mean"] - torch.tensor(WAN22_LATENT_MEAN)).abs().max().item(),
        (t["in.latent_std"] - torch.tensor(WAN22_LATENT_STD)).abs().max().item(),
    )


def run_decode(path: Path) -> CaseOutcome:
    t, _ = load_case(path)
    vae = _tiny_vae(path.parent, with_encoder=False)
    unclamped = vae.decode(t["in.video_latent"], clamp=False)
    err, where = max_abs_err(
        {
            "frames": (unclamped.clamp(-1, 1), t["out.frames"]),
            "frames_unclamped": (unclamped, t["out.frames_unclamped"]),
        }
    )
    const_err = _check_constants(t)
    if const_err > 0:
        return CaseOutcome(
            float("inf"), TOLERANCE, f"latent mean/std differ from the released constants by {const_err:.2e}"
        )
    return CaseOutcome(err, TOLERANCE, where)


def run_encode(path: Path) -> CaseOutcome:
    t, _ = load_case(path)
    vae = _tiny_vae(path.parent, with_encoder=True)
    pairs = {}
    for name in ("image", "clip"):
        if f"in.{name}" in t:
            pairs[f"{name}_latent"] = (vae.encode(t[f"in.{name}"]), t[f"out.{name}_latent"])
    if not pairs:
        return CaseOutcome(float("inf"), TOLERANCE, "case has no in.image / in.clip")
    const_err = _check_constants(t)
    if const_err > 0:
        return CaseOutcome(
            float("inf"), TOLERANCE, f"latent mean/std differ from the released constants by {const_err:.2e}"
        )
    err, where = max_abs_err(pairs)
    return CaseOutcome(err, TOLERANCE, where)
