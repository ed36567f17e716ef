"""The built-in demo model: Ovi's whole pipeline at toy size, with deterministic random weights and no download.

It exists so that the first command on a fresh machine works and exercises every stage (prompt formatting, text
encoder, joint sampler with guidance and skip-layer guidance, video and audio decoders, mp4 muxing) in a few
seconds on a CPU. It has never been trained: its output is coloured noise with a noise-like soundtrack.

It mirrors the 720x720_5s clip structure — 31 video latents decode to 121 frames at 24 fps, 157 audio latents to
80,384 samples at 16 kHz (5.024 s) — at 64x64 pixels, with the golden vectors' tiny fusion config (width 64,
3 fused blocks) and the decoders' tiny builds. Default sampling: 8 steps (the real model uses 50) and skip-layer
guidance on block 1 (the real default, 11, does not exist in 3 blocks); every other setting is Ovi's default.
"""

from __future__ import annotations

import logging

import torch

from ovi_core import mmaudio_encoder, mmaudio_vae, text_encoder, wan_vae
from ovi_core.config import FusionConfig, Variant
from ovi_core.fusion import OviFusion
from ovi_core.sampler import SamplingSettings
from ovi_core.weights import init_weights_seeded

logger = logging.getLogger(__name__)

DEMO_SIDE = 64  # pixels
DEMO_VARIANT = Variant(
    name="demo",
    filename="(built-in demo model, no file)",
    video_latent_length=31,  # -> 121 frames at 24 fps, as 720x720_5s
    audio_latent_length=157,  # -> 80,384 samples at 16 kHz
    target_area=DEMO_SIDE * DEMO_SIDE,
    caption_style="audcap",  # the 720x720_5s prompt spelling
)
DEMO_CONFIG = FusionConfig.tiny()
DEMO_SETTINGS = SamplingSettings(steps=8, slg_layer=1)
DEMO_WEIGHTS_SEED = 0
# The demo's tensors are tiny: one CPU thread is as fast as several and does not collapse when the machine is busy
# (several threads on small ops under oversubscription made a 5 s run take 90 s in our tests).
DEMO_THREADS = 1

# What the demo model cannot honour, and why (the command line names every one that was given).
DEMO_IGNORES = {
    "variant": "the demo is one tiny model",
    "fp8": "the demo has no fp8 file",
    "attention": "the demo always uses PyTorch SDPA",
    "dtype": "the demo computes in float32",
    "weight_dtype": "the demo keeps float32 weights",
    "vae_dtype": "the demo decodes in float32",
}


def demo_notice(steps: int = DEMO_SETTINGS.steps) -> str:
    """The banner printed before a demo run; ``steps``: the step count the run really uses."""
    return (
        "DEMO MODEL: no Ovi weights were configured, so this runs the built-in tiny model with random, untrained "
        f"weights ({DEMO_SIDE}x{DEMO_SIDE}, {steps} step{'s' if steps != 1 else ''}). The clip has Ovi's real "
        "structure (121 frames at 24 fps with a 16 kHz soundtrack) but its pictures and sound are noise, not a "
        "generation. Point the command at real weights (--ckpt-dir, --comfy-models or the per-file options) for "
        "real output."
    )


def build_demo_fusion(seed: int = DEMO_WEIGHTS_SEED, device: str | torch.device = "cpu") -> OviFusion:
    """The tiny fusion model with deterministic weights (float32)."""
    model = init_weights_seeded(OviFusion(DEMO_CONFIG), seed)
    return model.to(device).eval().requires_grad_(False)


def build_demo_text_encoder(seed: int = DEMO_WEIGHTS_SEED, device: str | torch.device = "cpu"):
    return text_encoder.build_demo_text_encoder(seed).to(device)


def build_demo_video_vae(seed: int = DEMO_WEIGHTS_SEED, device: str | torch.device = "cpu"):
    return wan_vae.build_demo_video_vae(seed, device=device)


def demo_tokenizer_model() -> bytes:
    """A tiny sentencepiece model (trained here in a fraction of a second) standing in for umT5's spiece.model."""
    import io

    import sentencepiece as spm

    text = ("a cat plays the piano in a small room while rain falls on the window and a woman says hello "
            "piano music soft rain jitter bad hands blur distortion robotic muffled echo distorted").split()
    sentences = [" ".join(text[i:i + 8]) for i in range(0, len(text), 3)] * 8
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, vocab_size=64,
                                   hard_vocab_limit=False, num_threads=1, minloglevel=2, pad_id=0, eos_id=1,
                                   unk_id=2, bos_id=-1)
    return buf.getvalue()


def write_demo_checkpoints(folder, layout: str = "reference", seed: int = DEMO_WEIGHTS_SEED):
    """Write the demo model as weight files laid out like the real ones, to exercise the file loaders without a
    download: ``layout="reference"`` gives Ovi/model.safetensors, Wan2.2-TI2V-5B/{models_t5_umt5-xxl-enc-bf16.pth,
    google/umt5-xxl/spiece.model, Wan2.2_VAE.pth}, MMAudio/ext_weights/{v1-16.pth, best_netG.pt};
    ``layout="comfy"`` gives ovi/model.safetensors, text_encoders/umt5_xxl_fp16.safetensors (tokenizer inside),
    vae/wan2.2_vae.safetensors and vae/mmaudio_vae_16k_fp32.safetensors (VAE + vocoder in one file). The audio VAE
    files hold the demo encoder's ``encoder.*`` tensors too (ovi_core.mmaudio_encoder.load_audio_encoder reads them).
    The files hold safetensors data whatever their extension (the loaders read the content, not the name).
    The fused file says it is a 720x720_5s model; generating with it runs at 704x704 (slow on a CPU)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from ovi_core.weights import save_fusion_checkpoint

    def save(tensors: dict, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))

    root = Path(folder)
    text = build_demo_text_encoder(seed).model.state_dict()
    text.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight
    vae = build_demo_video_vae(seed).state_dict()
    audio = build_demo_audio_decoder(seed)
    # the VAE's encoder half (audio -> latent), stored with the decoder as in MMAudio's v1-16.pth
    encoder = {k: v for k, v in build_demo_audio_encoder(seed).state_dict().items() if k.startswith("encoder.")}
    spiece = demo_tokenizer_model()
    if layout == "reference":
        wan, mm = root / "Wan2.2-TI2V-5B", root / "MMAudio" / "ext_weights"
        (root / "Ovi").mkdir(parents=True, exist_ok=True)
        save_fusion_checkpoint(build_demo_fusion(seed), root / "Ovi" / "model.safetensors")
        save(text, wan / "models_t5_umt5-xxl-enc-bf16.pth")
        (wan / "google" / "umt5-xxl").mkdir(parents=True, exist_ok=True)
        (wan / "google" / "umt5-xxl" / "spiece.model").write_bytes(spiece)
        save(vae, wan / "Wan2.2_VAE.pth")
        save({**audio.vae.state_dict(), **encoder}, mm / "v1-16.pth")
        save(audio.vocoder.state_dict(), mm / "best_netG.pt")
    elif layout == "comfy":
        (root / "ovi").mkdir(parents=True, exist_ok=True)
        save_fusion_checkpoint(build_demo_fusion(seed), root / "ovi" / "model.safetensors")
        text["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
        save(text, root / "text_encoders" / "umt5_xxl_fp16.safetensors")
        save(vae, root / "vae" / "wan2.2_vae.safetensors")
        save({**audio.state_dict(), **{f"vae.{k}": v for k, v in encoder.items()}},
             root / "vae" / "mmaudio_vae_16k_fp32.safetensors")
    else:
        raise ValueError(f"layout must be 'reference' or 'comfy', got {layout!r}")
    return root


def build_demo_audio_decoder(seed: int = DEMO_WEIGHTS_SEED, device: str | torch.device = "cpu"):
    """The decoders' tiny MMAudio VAE + BigVGAN (ovi_core.mmaudio_vae.build_demo_audio_decoder)."""
    return mmaudio_vae.build_demo_audio_decoder(seed, device=device)


def build_demo_audio_encoder(seed: int = DEMO_WEIGHTS_SEED, device: str | torch.device = "cpu"):
    """The tiny MMAudio VAE encoder that goes with the demo audio decoder (ovi_core.mmaudio_encoder)."""
    return mmaudio_encoder.build_demo_audio_encoder(seed, device=device)
