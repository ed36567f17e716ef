"""Golden cases for the audio decoder: audio_decode_case_* (MMAudio VAE latent -> mel -> BigVGAN waveform).

The tiny weights sit next to the cases: `tiny_mmaudio_vae.safetensors` (raw MMAudio layout, weights not yet
normalised, as in v1-16.pth) and `tiny_bigvgan.safetensors` (weight_g / weight_v keys, as in best_netG.pt).
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from conformance.runner import CaseOutcome
from ovi_core.mmaudio_vae import audio_decoder_from_state_dicts

from .common import load_case, max_abs_err

TOLERANCE = 1e-4  # float32 implementation vs the float32 reference run


def run(path: Path) -> CaseOutcome:
    t, _ = load_case(path)
    golden = path.parent
    decoder = audio_decoder_from_state_dicts(
        load_file(str(golden / "tiny_mmaudio_vae.safetensors")), load_file(str(golden / "tiny_bigvgan.safetensors"))
    )
    latent = t["in.audio_latent_BCL"]
    pairs = {"mel": (decoder.decode_mel(latent), t["out.mel"]), "waveform": (decoder.decode(latent), t["out.waveform"])}
    err, where = max_abs_err(pairs)
    return CaseOutcome(err, TOLERANCE, where)
