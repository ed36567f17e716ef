"""Golden cases for the audio encoder: audio_encode_case_* (16 kHz waveform -> log10-mel -> MMAudio VAE posterior).

The weights are `tiny_mmaudio_vae.safetensors` next to the case (raw MMAudio layout, encoder.* and decoder.*, weights
not yet normalised, as in v1-16.pth), loaded by the same loader users get. Compared: the log-mel, the posterior mean
(the latent) and the log-variance. The case's stored constants (Slaney mel basis, Hann window, data_mean/data_std)
must equal the ones we build, so a drift in the front end is reported as such.
"""

from __future__ import annotations

from pathlib import Path

import torch

from conformance.runner import CaseOutcome
from ovi_core.mmaudio_encoder import load_audio_encoder

from .common import load_case, max_abs_err

TOLERANCE = 1e-4  # float32 implementation vs the float32 reference run (its fp32-vs-fp64 difference: 2.4e-6)
CONSTANT_TOLERANCE = 1e-7  # the mel basis is built bit-identically to librosa's; data_mean/data_std come from the file


def _constant_errors(encoder, t: dict) -> dict[str, float]:
    ours = {
        "in.mel_basis": encoder.mel.mel_basis,
        "in.hann_window": encoder.mel.window,
        "in.data_mean": encoder.data_mean.flatten(),
        "in.data_std": encoder.data_std.flatten(),
    }
    return {k: (v.double() - t[k].double()).abs().max().item() for k, v in ours.items() if k in t}


def run(path: Path) -> CaseOutcome:
    t, _ = load_case(path)
    encoder = load_audio_encoder(Path(path).parent / "tiny_mmaudio_vae.safetensors", dtype=torch.float32)
    for name, err in _constant_errors(encoder, t).items():
        if not err <= CONSTANT_TOLERANCE:
            return CaseOutcome(float("inf"), TOLERANCE, f"{name} differs from ours by {err:.2e}")
    wave = t["in.waveform"]
    mean, logvar = encoder.posterior(wave)
    pairs = {"mel": (encoder.log_mel(wave), t["out.mel"]), "mean": (mean, t["out.mean"])}
    if "out.logvar" in t:
        pairs["logvar"] = (logvar, t["out.logvar"])
    err, where = max_abs_err(pairs)
    return CaseOutcome(err, TOLERANCE, where)
