"""Conversions between ComfyUI's socket types and ovi_core's tensors, with the checks that turn a wrong input
into a message a user can act on. Pictures and sound themselves are converted by ovi_core.media (first frame,
frames <-> IMAGE, waveform layouts), the same code as the CLI's; here only ComfyUI's dicts are packed and unpacked.

LATENT layouts produced and accepted by the pack (README, "What travels between nodes"):
- video: ``{"samples": [B, 48, F, H/16, W/16]}`` — ComfyUI's Wan2.2 layout, i.e. the *raw* Wan2.2 VAE latent
  (ComfyUI normalises it inside the model, ``latent_formats.Wan22.process_in``), so core's VAEDecode with
  ``wan2.2_vae.safetensors`` decodes it too. ovi_core works on the normalised latent (raw - mean) / std.
- audio: ``{"samples": [B, 20, L], "type": "audio"}`` — MMAudio 16 kHz VAE latents, channels first
  (the sampler's [B, L, 20] transposed), 31.25 latents per second.
"""

from __future__ import annotations

import logging
import math

import torch

from ovi_core.errors import OviInputError
from ovi_core.media import audio_layout
from ovi_core.sizes import AUDIO_LATENT_CHANNELS, VIDEO_LATENT_CHANNELS, check_clip_size
from ovi_core.text_encoder import TEXT_LEN
from ovi_core.wan_vae import WAN22_LATENT_MEAN, WAN22_LATENT_STD

log = logging.getLogger(__name__)

TEXT_DIM = 4096  # umT5-XXL


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, VIDEO_LATENT_CHANNELS, 1, 1, 1)
    mean = torch.tensor(WAN22_LATENT_MEAN, dtype=torch.float32, device=x.device).view(shape)
    std = torch.tensor(WAN22_LATENT_STD, dtype=torch.float32, device=x.device).view(shape)
    return mean, std


# ---- LATENT ------------------------------------------------------------------------------------------------------
def _samples(latent, socket: str) -> torch.Tensor:
    if not isinstance(latent, dict):
        raise OviInputError(f"{socket} must be a LATENT (a dict with a 'samples' tensor), got {type(latent).__name__}")
    samples = latent.get("samples")
    if not isinstance(samples, torch.Tensor) or type(samples).__name__ == "NestedTensor":
        raise OviInputError(f"{socket} is a LATENT whose samples are a {type(samples).__name__}, not one tensor (a "
                            "joint audio+video latent of another model?); connect Ovi Sampler's latent outputs here")
    return samples


def video_latent_to_comfy(video: torch.Tensor, device: torch.device) -> dict:
    """Normalised [B, 48, F, h, w] -> ComfyUI's Wan2.2 LATENT (raw VAE space)."""
    mean, std = _stats(video)
    return {"samples": (video.float() * std + mean).to(device)}


def video_latent_from_comfy(latent, socket: str = "video_latent") -> torch.Tensor:
    """ComfyUI's Wan2.2 LATENT -> normalised float32 [B, 48, F, h, w] (what Ovi's sampler and VAE work on)."""
    x = _samples(latent, socket)
    shape = list(x.shape)
    if x.dim() == 3 and x.shape[1] == AUDIO_LATENT_CHANNELS or latent.get("type") == "audio":
        raise OviInputError(f"{socket} got an audio latent {shape}; connect the sampler's video_latent output here "
                            "(the audio_latent goes to Ovi Audio Decode)")
    if x.dim() == 4:
        raise OviInputError(f"{socket} got an image latent {shape} [batch, channels, height, width]; the Wan2.2 video "
                            f"VAE decodes video latents [batch, {VIDEO_LATENT_CHANNELS}, frames, height, width] such as "
                            "Ovi Sampler's video_latent")
    if x.dim() != 5 or x.shape[1] != VIDEO_LATENT_CHANNELS:
        hint = (" A 16-channel video latent belongs to Wan2.1 / Wan2.2-14B and their VAE; Ovi uses the 48-channel "
                "Wan2.2-TI2V-5B latent." if x.dim() == 5 and x.shape[1] == 16 else "")
        raise OviInputError(f"{socket} has shape {shape}; the Wan2.2 video VAE needs [batch, {VIDEO_LATENT_CHANNELS}, "
                            f"frames, height, width].{hint}")
    mean, std = _stats(x)
    return (x.float() - mean) / std


def joint_latent_parts(latent, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(video [B, 48, F, h, w], audio [B, 20, L]) of a joint audio+video LATENT, or OviInputError naming ``what``
    the socket expects (the message ends the sentence "latent must be ...")."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    parts = samples.unbind() if getattr(samples, "is_nested", False) else None
    if parts is None or len(parts) != 2 or parts[0].dim() != 5 or parts[1].dim() != 3:
        raise OviInputError(f"latent must be {what}")
    return parts[0], parts[1]


def audio_latent_to_comfy(audio: torch.Tensor, device: torch.device) -> dict:
    """Sampler layout [B, L, 20] -> ComfyUI LATENT {"samples": [B, 20, L], "type": "audio"}."""
    return {"samples": audio.float().transpose(1, 2).contiguous().to(device), "type": "audio"}


def audio_latent_from_comfy(latent, socket: str = "audio_latent") -> torch.Tensor:
    """ComfyUI LATENT -> float32 [B, 20, L] (what the MMAudio decoder takes)."""
    x = _samples(latent, socket)
    shape = list(x.shape)
    if x.dim() == 5:
        raise OviInputError(f"{socket} got a video latent {shape}; connect the sampler's audio_latent output here "
                            "(the video_latent goes to Ovi Video Decode)")
    if x.dim() != 3 or x.shape[1] != AUDIO_LATENT_CHANNELS or x.shape[2] < 1:
        hint = (f" A {x.shape[1]}-channel audio latent belongs to another audio model (Stable Audio uses 64); Ovi's "
                f"audio is the {AUDIO_LATENT_CHANNELS}-channel MMAudio 16 kHz latent." if x.dim() == 3 else "")
        raise OviInputError(f"{socket} has shape {shape}; Ovi's audio decoder needs [batch, {AUDIO_LATENT_CHANNELS}, "
                            f"length].{hint}")
    return x.float()


# ---- AUDIO -------------------------------------------------------------------------------------------------------
def audio_from_comfy(audio, name: str = "audio", one: bool = False) -> tuple[torch.Tensor, int]:
    """ComfyUI AUDIO {"waveform": [B, C, N], "sample_rate"} -> (waveform [B, C, N] as given, rate in Hz); ``one``:
    a single sound only (B = 1). The layouts are ovi_core.media.audio_layout's ([C, N] is taken as one sound)."""
    if not isinstance(audio, dict) or not isinstance(audio.get("waveform"), torch.Tensor) or "sample_rate" not in audio:
        raise OviInputError(f"{name} must be an AUDIO {{'waveform': [batch, channels, samples], 'sample_rate'}}, got "
                            f"{type(audio).__name__}")
    wave = audio_layout(audio["waveform"], name)
    if one and wave.shape[0] != 1:
        raise OviInputError(f"{name} holds a batch of {wave.shape[0]} sounds; one clip takes one. Join them first "
                            "(core's AudioConcat) or decode a single clip")
    rate = audio["sample_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or int(rate) < 1 \
            or rate != int(rate):
        raise OviInputError(f"{name} sample_rate must be a positive whole number of Hz (a sample rate such as "
                            f"16000), got {rate!r}")
    return wave, int(rate)


def audio_to_comfy(wave: torch.Tensor, sample_rate: int, device: torch.device | None = None) -> dict:
    """A waveform [N], [C, N] or [B, C, N] -> ComfyUI AUDIO {"waveform": float32 [B, C, N], "sample_rate"}."""
    wave = audio_layout(wave).float()
    return {"waveform": wave if device is None else wave.to(device), "sample_rate": int(sample_rate)}


def check_size(width, height, target_area: int | None = None, what: str = "") -> str | None:
    """None when width x height is a usable clip size, else the message (what was given, what is allowed, what to
    do). Without ``target_area`` the bound is the largest released variant's (VALIDATE_INPUTS, before the model is
    known); the sampler checks again with its model's trained area (ovi_core.sizes.check_clip_size)."""

    try:
        check_clip_size(width, height, target_area, what)
    except OviInputError as exc:
        return str(exc)
    return None


def refuse(message: str | None):
    """VALIDATE_INPUTS verdict that ComfyUI shows once: True, or an OviInputError.

    ComfyUI 0.8 (execution.validate_inputs) attaches a returned message to *every* input the method names, so a check
    of width and height together would list the same message twice; an exception raised there is listed once, with
    its message, under the node. Methods that name a single input return their message instead."""
    if message is not None:
        raise OviInputError(message)
    return True


# ---- CONDITIONING ------------------------------------------------------------------------------------------------
def conditioning_to_states(conditioning, socket: str) -> torch.Tensor:
    """Core CONDITIONING from CLIPTextEncode with a umT5-XXL (CLIPLoader type "wan") -> [tokens, 4096].

    ComfyUI pads umT5 states to 512 rows with zeros; Ovi feeds exactly such zero-padded rows, so the trailing zero
    rows are dropped here (the model pads back to 512 with zeros). Longer prompts are cut to 512 tokens."""
    if not isinstance(conditioning, list) or not conditioning or not isinstance(conditioning[0], (list, tuple)) \
            or not isinstance(conditioning[0][0], torch.Tensor):
        got = type(conditioning).__name__
        if isinstance(conditioning, list):
            got = ("an empty list" if not conditioning else
                   f"a list of {type(conditioning[0]).__name__} (a CONDITIONING is a list of [tensor, dict] pairs)")
        raise OviInputError(f"{socket} must be a CONDITIONING from CLIPTextEncode, got {got}")
    if len(conditioning) > 1:
        log.warning("%s holds %d conditionings (combined or scheduled); Ovi uses the first one", socket,
                    len(conditioning))
    states = conditioning[0][0]
    if states.dim() != 3 or states.shape[-1] != TEXT_DIM:
        width = states.shape[-1] if states.dim() else "?"
        raise OviInputError(
            f"{socket} has shape {list(states.shape)} (width {width}); Ovi needs umT5-XXL states of width {TEXT_DIM}. "
            "Load umt5_xxl_fp16.safetensors (or the fp8 one) with CLIPLoader, type 'wan', and encode with "
            "CLIPTextEncode — other text encoders (CLIP-L, T5-XXL of Flux/SD3, Qwen, ...) do not fit")
    if states.shape[0] > 1:
        log.warning("%s holds a batch of %d prompts; Ovi uses the first", socket, states.shape[0])
    x = states[0].float()
    nonzero = (x != 0).any(dim=-1).nonzero()
    length = int(nonzero[-1]) + 1 if len(nonzero) else 1
    if length > TEXT_LEN:
        log.warning("%s is %d tokens long; Ovi reads at most %d, the rest is dropped", socket, length, TEXT_LEN)
        length = TEXT_LEN
    return x[:length].cpu()


AUDIO_CONTEXT_KEY = "ovi_audio_context"  # a CONDITIONING entry's audio-tower text (read by native_model.OviAV)


def states_to_conditioning(states: torch.Tensor, **extra) -> list:
    """Ovi text states [tokens, 4096] -> core CONDITIONING [[states zero-padded to [1, 512, 4096], extra]] — the
    layout core CLIPTextEncode gives with a umT5-XXL (CLIPLoader type wan)."""
    x = states.float().cpu()[:TEXT_LEN]
    padded = torch.zeros(1, TEXT_LEN, x.shape[-1])
    padded[0, : x.shape[0]] = x
    return [[padded, dict(extra)]]


def text_from_conditioning(positive, video_negative=None, audio_negative=None):
    """(positive, video negative, audio negative) states [tokens, 4096] from CONDITIONING. A negative entry's
    ``ovi_audio_context`` (Ovi Text Encode's negative) is the audio negative unless one is given; a missing
    negative falls back to the other one, or to an all-zero context with a warning."""
    pos = conditioning_to_states(positive, "positive")
    vneg = conditioning_to_states(video_negative, "video_negative") if video_negative is not None else None
    aneg = conditioning_to_states(audio_negative, "audio_negative") if audio_negative is not None else None
    if aneg is None and vneg is not None and isinstance(video_negative[0][1], dict) \
            and isinstance(video_negative[0][1].get(AUDIO_CONTEXT_KEY), torch.Tensor):
        aneg = conditioning_to_states([[video_negative[0][1][AUDIO_CONTEXT_KEY], {}]], "audio_negative")
    if vneg is None and aneg is None:
        log.warning("Ovi: no negative conditioning connected; the negative pass uses an all-zero context. Connect "
                    "CLIPTextEncode with Ovi's negatives for the reference behaviour")
        vneg = aneg = torch.zeros(1, TEXT_DIM)
    return pos, (vneg if vneg is not None else aneg), (aneg if aneg is not None else vneg)
