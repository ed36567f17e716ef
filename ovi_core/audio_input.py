"""User audio -> what the MMAudio encoder and the sampler take (audio -> video, held audio).

    latent = encode_audio(encoder, waveform, sample_rate, "720x720_5s")   # [C, N] any rate -> [L, 20]
    latents = encode_audio_batch(encoder, audio["waveform"], audio["sample_rate"], variant)   # [B, C, N] -> [B, L, 20]

Stated rules (`prepare_audio`), applied in this order:
1. Checked: a float tensor [channels, samples] (or [samples] = mono), 1-8 channels, at least one sample, no NaN/inf;
   the sample rate an integer from 1,000 to 768,000 Hz. Anything else raises OviInputError saying what to do.
2. Mixed to mono by averaging the channels (a stereo file with opposite channels cancels: that is the rule).
3. Resampled to 16 kHz with the project's resampler (`audio_resample.resample_audio`: torchaudio's, else FFmpeg's);
   a long input is first cut at the source rate to what the window needs plus a margin, so an hour of audio is
   not resampled to use 5 s of it.
4. Fitted to the window (the variant's audio latent length x 512 samples: 80,384 for the 5 s models, 160,768 for
   960x960_10s): the END is trimmed, or silence (zeros) is appended at the END. The start is never moved, so
   speech stays where it was in time. What was done is logged (a WARNING when more than one latent, 32 ms, is
   cut or padded; INFO otherwise).
5. Loudness is not changed. Samples beyond +-1 are kept as they are in the prepared waveform; the mel front end
   then clips them to [-1, 1], exactly as MMAudio's does, and a WARNING gives the peak and how many samples clip.
   Silent (or nearly silent, peak < 1e-4) audio is encoded as it is, with a WARNING.
"""

from __future__ import annotations

import logging
import math
import numbers

import numpy as np
import torch

from .audio_resample import resample_audio
from .config import Variant, get_variant
from .errors import OviInputError
from .media import audio_layout
from .mmaudio_encoder import AudioEncoder
from .mmaudio_vae import SAMPLE_RATE, SAMPLES_PER_LATENT

logger = logging.getLogger(__name__)

MAX_CHANNELS = 8
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
SILENCE_PEAK = 1e-4  # -80 dBFS
_RESAMPLE_MARGIN = 1024  # source samples kept past the window before resampling (filter tails are far shorter)


def _check_sample_rate(sample_rate) -> int:
    if isinstance(sample_rate, torch.Tensor) and sample_rate.numel() == 1:
        sample_rate = sample_rate.item()
    ok = isinstance(sample_rate, numbers.Real) and not isinstance(sample_rate, bool)
    ok = ok and math.isfinite(sample_rate) and float(sample_rate).is_integer()
    if not ok or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise OviInputError(
            f"audio sample rate must be a whole number of Hz from {MIN_SAMPLE_RATE:,} to {MAX_SAMPLE_RATE:,}; got "
            f"{sample_rate!r}. Pass the rate the audio was recorded/loaded at (e.g. 16000, 44100, 48000)"
        )
    return int(sample_rate)


def _check_waveform(waveform) -> torch.Tensor:
    """-> float32 [channels, samples] on the CPU, or OviInputError."""
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(waveform)
    if not isinstance(waveform, torch.Tensor):
        raise OviInputError(f"audio must be a tensor [channels, samples]; got {type(waveform).__name__}")
    if waveform.dim() == 1:
        waveform = waveform[None]
    if waveform.dim() != 2:
        hint = " For a batch [B, C, N] use encode_audio_batch." if waveform.dim() == 3 else ""
        raise OviInputError(
            f"audio must be [channels, samples] (or [samples]); got shape {tuple(waveform.shape)}.{hint}"
        )
    channels, samples = waveform.shape
    if channels > MAX_CHANNELS:
        hint = (
            f" It looks like [samples, channels] ({samples} channels of {channels} samples): transpose it."
            if samples <= MAX_CHANNELS
            else ""
        )
        raise OviInputError(
            f"audio has {channels} channels; at most {MAX_CHANNELS} are supported (shape {tuple(waveform.shape)}).{hint}"
        )
    if channels == 0 or samples == 0:
        raise OviInputError(f"audio is empty: shape {tuple(waveform.shape)} (channels, samples); load a non-empty clip")
    if not waveform.is_floating_point():
        raise OviInputError(
            f"audio samples must be floating point in [-1, 1]; got {waveform.dtype} (for 16-bit PCM divide by 32768)"
        )
    waveform = waveform.detach().to("cpu", torch.float32)
    bad = int((~torch.isfinite(waveform)).sum())
    if bad:
        raise OviInputError(
            f"audio contains {bad} NaN/inf samples out of {waveform.numel()}; the file or the node that made it is "
            "broken (re-export it, or check the previous node's output)"
        )
    return waveform


def prepare_audio(waveform, sample_rate, num_samples: int) -> torch.Tensor:
    """Any waveform [channels, samples] (or [samples]) at any rate -> float32 mono [num_samples] at 16 kHz, by the
    rules in this module's docstring (mix by averaging, resample, trim/pad the end), with a log line saying what."""
    if not isinstance(num_samples, int) or num_samples < SAMPLES_PER_LATENT:
        raise OviInputError(f"num_samples must be an int >= {SAMPLES_PER_LATENT}; got {num_samples!r}")
    wave = _check_waveform(waveform)
    sr = _check_sample_rate(sample_rate)
    channels, n_in = wave.shape
    mono = wave.mean(dim=0)  # [N]: rule 2

    needed = math.ceil(num_samples * sr / SAMPLE_RATE) + _RESAMPLE_MARGIN  # rule 3: cut first, keep a margin
    mono = mono[:needed]
    if sr != SAMPLE_RATE:
        mono = resample_audio(mono, sr, SAMPLE_RATE)
    n_16k = round(n_in * SAMPLE_RATE / sr)  # the whole input's length at 16 kHz

    out = torch.zeros(num_samples)  # rule 4: trim or pad the end
    kept = min(num_samples, mono.shape[0])
    out[:kept] = mono[:kept]

    src = f"{channels} channel{'s' if channels > 1 else ''} at {sr} Hz, {n_in / sr:.3f} s"
    mix = "mixed to mono, " if channels > 1 else ""
    rate = "resampled to 16 kHz, " if sr != SAMPLE_RATE else ""
    window = f"{num_samples / SAMPLE_RATE:.3f} s ({num_samples // SAMPLES_PER_LATENT} audio latents)"
    diff = n_16k - num_samples
    if diff > 0:
        what, level = f"{diff / SAMPLE_RATE:.3f} s cut from the end to fit {window}", diff > SAMPLES_PER_LATENT
    elif diff < 0:
        what, level = (
            f"{-diff / SAMPLE_RATE:.3f} s of silence added at the end to fill {window}",
            -diff > SAMPLES_PER_LATENT,
        )
    else:
        what, level = f"exactly {window}", False
    logger.log(logging.WARNING if level else logging.INFO, "audio input: %s -> %s%s%s", src, mix, rate, what)

    peak = out.abs().max().item()  # rule 5
    if peak > 1.0:
        n_clip = int((out.abs() > 1.0).sum())
        logger.warning(
            "audio input peaks at %.3f (%d samples, %.2f%%, beyond +-1): kept as is; the mel front end clips them to "
            "[-1, 1] as MMAudio does. Lower the gain before encoding to avoid clipping distortion",
            peak,
            n_clip,
            100.0 * n_clip / num_samples,
        )
    elif peak < SILENCE_PEAK:
        logger.warning("audio input is silent in the %s window (peak %.1e): it is encoded as silence", window, peak)
    return out


def _latent_length(variant: Variant | str | None, num_latents: int | None) -> int:
    if num_latents is not None:
        if not isinstance(num_latents, int) or num_latents < 1:
            raise OviInputError(f"num_latents must be a positive int; got {num_latents!r}")
        return num_latents
    if variant is None:
        raise OviInputError("pass the Ovi variant (e.g. '720x720_5s') or num_latents to size the audio window")
    return (get_variant(variant) if isinstance(variant, str) else variant).audio_latent_length


def encode_audio_batch(
    encoder: AudioEncoder,
    waveform,
    sample_rate,
    variant: Variant | str | None = None,
    num_latents: int | None = None,
) -> torch.Tensor:
    """waveform [B, C, N] (ComfyUI AUDIO's layout; [C, N] and [N] are one clip, ovi_core.media.audio_layout) at
    `sample_rate` -> float32 audio latents [B, L, 20] in the sampler's layout (channel last; the VAE / ComfyUI LATENT
    layout is its transpose(1, 2), [B, 20, L]). L is the variant's audio latent length unless `num_latents` is given.
    Each clip is prepared by prepare_audio."""
    waveform = audio_layout(waveform, "audio batch")
    if waveform.shape[0] == 0:
        raise OviInputError(f"audio batch is empty: shape {tuple(waveform.shape)}")
    length = _latent_length(variant, num_latents)
    clips = torch.stack([prepare_audio(clip, sample_rate, length * SAMPLES_PER_LATENT) for clip in waveform])
    latent = encoder.encode(clips)  # [B, 20, L]
    assert latent.shape[-1] == length, (tuple(latent.shape), length)
    return latent.transpose(1, 2).contiguous()


def encode_audio(
    encoder: AudioEncoder,
    waveform,
    sample_rate,
    variant: Variant | str | None = None,
    num_latents: int | None = None,
) -> torch.Tensor:
    """One clip [channels, samples] (or [samples]) at any rate -> float32 audio latent [L, 20], the sampler's
    per-clip layout (what `sample_joint` takes as an audio latent; ComfyUI's LATENT wants [1, 20, L])."""
    wave = _check_waveform(waveform)
    return encode_audio_batch(encoder, wave[None], sample_rate, variant, num_latents)[0]
