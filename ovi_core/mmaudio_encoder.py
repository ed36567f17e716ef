# Math follows MMAudio's 16 kHz mel front end and VAE encoder (hkchengrex/MMAudio, MIT licence); the mel filterbank is librosa's Slaney mel (ISC licence). The code is ours.
"""MMAudio 16 kHz audio encoder: waveform -> log10-mel -> VAE encoder -> posterior mean (the audio latent).

    enc = load_audio_encoder("v1-16.pth")          # or ComfyUI's single MMAudio VAE file (vae.encoder.* inside)
    z = enc.encode(wave)                           # [B, N] at 16 kHz -> [B, 20, N // 512]  (VAE layout)
    z.transpose(1, 2)                              # -> [B, L, 20], the sampler's audio-latent layout

Steps (as MMAudio's `MelConverter` + `VAE.encode` + `DiagonalGaussianDistribution.mean`):
1. clamp the waveform to [-1, 1]; reflect-pad (n_fft - hop) / 2 = 384 samples on each side;
2. STFT (n_fft 1024, hop 256, periodic Hann window of 1024, center=False), magnitude sqrt(re^2 + im^2 + 1e-9);
3. Slaney mel filterbank (80 bins, 0-8000 Hz, librosa's `filters.mel` defaults), log10(max(mel, 1e-5));
4. normalise per bin: (mel - data_mean) / data_std (the file's statistics);
5. the VAE encoder (bias-free MP convolutions, one 2x average-pool downsampling after level 0, middle attention),
   giving 40 channels = 20 mean + 20 log-variance; the mean is the latent (no sampling, no scaling).

N samples give N // 256 mel frames and N // 512 latents (an odd trailing mel frame is dropped by the pooling), so a
variant's 512 * L samples encode to exactly L latents and decode back to 512 * L samples.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import interrupt
from .checkpoint_io import read_checkpoint
from .errors import OviInputError, WrongFileError
from .mmaudio_vae import (
    MEL_MEAN_80,
    MEL_STD_80,
    SAMPLE_RATE,
    SAMPLES_PER_LATENT,
    Attention1d,
    MelVAEConfig,
    MPConv1d,
    ResBlock1d,
    _mp_silu,
    audio_vae_state_dict,
    fill_demo_weights_,
    load_vae_half_,
    normalize_mp_convs_,
    split_comfy_file,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MelSettings:
    """MMAudio's 16 kHz mel front end (`get_mel_converter('16k')`)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 1024
    hop: int = 256
    win: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5  # log10(max(mel, floor))
    magnitude_eps: float = 1e-9  # inside the square root of the STFT magnitude

    @property
    def pad(self) -> int:
        return (self.n_fft - self.hop) // 2  # 384 reflect-padded samples on each side


# ----------------------------------------------------------------------------------------------------------
# Mel front end


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic (27 mels per factor 6.4) above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    log_part = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, hz / f_sp)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """float32 [n_mels, n_fft // 2 + 1]: triangles on the Slaney mel scale, each scaled to unit area in Hz
    (norm='slaney'). Equals librosa.filters.mel(sr=..., n_fft=..., n_mels=..., fmin=..., fmax=...) bit for bit:
    the triangles are computed in float64 and stored in float32, then scaled in float64 and stored again, like
    librosa does (checked against the golden case's stored basis, made with librosa 0.11)."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # [n_fft//2 + 1]
    edges_hz = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = np.subtract.outer(edges_hz, fft_hz)  # [n_mels + 2, n_bins]: edge minus bin frequency
    weights = np.zeros((n_mels, fft_hz.size), dtype=np.float32)
    for i in range(n_mels):
        rising = -ramps[i] / widths[i]
        falling = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels]))[:, None]  # unit area (Slaney norm)
    return weights


class LogMel(nn.Module):
    """waveform [B, N] at 16 kHz -> log10-mel [B, 80, N // 256] (float32), MMAudio's `MelConverter` for 16k."""

    def __init__(self, settings: MelSettings = MelSettings()):
        super().__init__()
        self.settings = s = settings
        basis = slaney_mel_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.fmin, s.fmax)
        # not saved in state dicts: they are constants, rebuilt here
        self.register_buffer("mel_basis", torch.from_numpy(basis), persistent=False)
        self.register_buffer("window", torch.hann_window(s.win), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        s = self.settings
        return (num_samples + 2 * s.pad - s.n_fft) // s.hop + 1

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, N] -> STFT magnitude [B, n_fft // 2 + 1, frames], float32."""
        s = self.settings
        if wave.dim() != 2 or wave.shape[-1] <= s.pad:
            raise OviInputError(
                f"the mel front end needs a waveform [batch, samples] with more than {s.pad} samples; "
                f"got shape {tuple(wave.shape)}"
            )
        x = wave.float().clamp(-1.0, 1.0)  # MMAudio clips to [-1, 1] before the STFT
        x = F.pad(x.unsqueeze(1), (s.pad, s.pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            x,
            s.n_fft,
            hop_length=s.hop,
            win_length=s.win,
            window=self.window.to(x.device, torch.float32),
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # [B, 513, frames]
        spec = torch.view_as_real(spec)
        return torch.sqrt(spec.pow(2).sum(-1) + s.magnitude_eps)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mag = self.spectrogram(wave)  # [B, 513, T]
        mel = torch.matmul(self.mel_basis.to(mag.device, torch.float32), mag)  # [B, 80, T]
        return torch.log10(mel.clamp(min=self.settings.log_floor))


# ----------------------------------------------------------------------------------------------------------
# VAE encoder


class Downsample1d(nn.Module):
    """1x1 conv, 2x average pool over time (a trailing odd frame is dropped), 1x1 conv."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = MPConv1d(dim, dim, 1)
        self.conv2 = MPConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))


class MelEncoder(nn.Module):
    """Normalised mel [B, 80, T] -> moments [B, 2 * embed_dim, T // 2] (mean first, then log-variance)."""

    def __init__(self, cfg: MelVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.downsample_level = cfg.upsample_level - 1  # MMAudio's encoder down_layers=[0]
        widths = [cfg.hidden_dim * m for m in cfg.ch_mult]
        self.conv_in = MPConv1d(cfg.data_dim, cfg.hidden_dim, 3)
        self.down = nn.ModuleList()
        cin = cfg.hidden_dim
        for level, cout in enumerate(widths):
            stage = nn.Module()
            stage.block = nn.ModuleList(ResBlock1d(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks))
            if level == self.downsample_level:
                stage.downsample = Downsample1d(cout)
            self.down.append(stage)
            cin = cout
        self.mid = nn.Module()
        self.mid.block_1 = ResBlock1d(cin, cin)
        self.mid.attn_1 = Attention1d(cin)
        self.mid.block_2 = ResBlock1d(cin, cin)
        self.conv_out = MPConv1d(cin, 2 * cfg.embed_dim, 3)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clip = self.cfg.clip_act
        h = self.conv_in(x)  # [B, hidden, T]
        for level, stage in enumerate(self.down):
            interrupt.check("encoding the audio")
            for block in stage.block:
                h = block(h).clamp(-clip, clip)
            if level == self.downsample_level:
                h = stage.downsample(h)  # [B, C, T // 2]; not clamped (as the reference)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h))).clamp(-clip, clip)
        return self.conv_out(_mp_silu(h), gain=self.learnable_gain + 1)  # [B, 2 * embed, T // 2]


class AudioEncoder(nn.Module):
    """MMAudio's mel front end + VAE encoder half: waveform [B, N] at 16 kHz -> latent mean [B, 20, N // 512].

    State-dict keys are MMAudio's (`encoder.*`, `data_mean`, `data_std`); the mel constants are rebuilt."""

    sample_rate = SAMPLE_RATE
    samples_per_latent = SAMPLES_PER_LATENT

    def __init__(self, cfg: MelVAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MelVAEConfig()
        self.mel = LogMel(MelSettings(n_mels=cfg.data_dim))
        self.encoder = MelEncoder(cfg)
        self.register_buffer("data_mean", torch.tensor(MEL_MEAN_80).view(1, -1, 1))
        self.register_buffer("data_std", torch.tensor(MEL_STD_80).view(1, -1, 1))

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.conv_in.weight.device

    def normalize_weights_(self) -> AudioEncoder:
        """Apply the one-time weight normalisation to every MP conv (raw MMAudio checkpoints need it)."""
        return normalize_mp_convs_(self)

    @torch.inference_mode()
    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """waveform [B, N] at 16 kHz -> log10-mel [B, 80, N // 256] (float32, not normalised)."""
        self._check_wave(wave)
        return self.mel(wave.to(self.device))

    @torch.inference_mode()
    def posterior(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """waveform [B, N] -> (mean, logvar), each float32 [B, 20, N // 512]; logvar clamped to [-30, 20]."""
        mel = self.log_mel(wave)  # [B, 80, T]
        x = (mel - self.data_mean.float()) / self.data_std.float()  # step 4, float32
        moments = self.encoder(x.to(self.dtype)).float()  # [B, 40, T // 2]
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """waveform [B, N] at 16 kHz, values in [-1, 1] -> float32 latent [B, 20, N // 512] (the posterior mean,
        VAE layout = the decoder's input; transpose(1, 2) for the sampler's [B, L, 20])."""
        return self.posterior(wave)[0]

    def _check_wave(self, wave: torch.Tensor) -> None:
        if not isinstance(wave, torch.Tensor) or wave.dim() != 2:
            shape = tuple(wave.shape) if isinstance(wave, torch.Tensor) else type(wave).__name__
            raise OviInputError(
                f"the audio encoder takes a mono 16 kHz waveform [batch, samples]; got {shape} "
                "(use ovi_core.audio_input.prepare_audio for other rates and channel counts)"
            )
        if wave.shape[-1] < SAMPLES_PER_LATENT:
            raise OviInputError(
                f"audio of {wave.shape[-1]} samples is too short to encode: one latent needs "
                f"{SAMPLES_PER_LATENT} samples (32 ms at 16 kHz)"
            )
        if not wave.is_floating_point():
            raise OviInputError(f"waveform must be floating point in [-1, 1]; got {wave.dtype}")
        if not torch.isfinite(wave).all():
            raise OviInputError(f"waveform contains {int((~torch.isfinite(wave)).sum())} NaN/inf samples")


# ----------------------------------------------------------------------------------------------------------
# Files

_ENCODER_MARKER = "encoder.conv_in.weight"


def audio_encoder_from_state_dict(
    sd: dict, dtype: torch.dtype = torch.float32, normalized: bool = False, source: str = "audio VAE"
) -> AudioEncoder:
    """Build the encoder from MMAudio key names (`encoder.*`, `data_mean`, `data_std`; `decoder.*` is ignored).
    `normalized=False` (raw v1-16.pth weights) normalises the MP conv weights once, in float32."""
    sd = audio_vae_state_dict(sd, source, "Encoding audio needs MMAudio's `v1-16.pth` (hkchengrex/MMAudio, ext_weights/)")
    if _ENCODER_MARKER not in sd or "encoder.conv_out.weight" not in sd:
        raise WrongFileError(
            f"{source} holds only the decoder half of MMAudio's VAE (no `encoder.*` tensors); encoding audio "
            "needs the full VAE: MMAudio's `v1-16.pth` (hkchengrex/MMAudio, ext_weights/)"
        )
    w_in, w_out = sd[_ENCODER_MARKER], sd["encoder.conv_out.weight"]
    cfg = MelVAEConfig(data_dim=w_in.shape[1], embed_dim=w_out.shape[0] // 2, hidden_dim=w_in.shape[0])
    if cfg.data_dim != 80:
        raise WrongFileError(f"{source} has {cfg.data_dim} mel bins; only MMAudio's 16 kHz (80-bin) VAE is supported")
    model = AudioEncoder(cfg)
    load_vae_half_(model, sd, "encoder", source, extra_ok=False)
    if not normalized:
        model.normalize_weights_()  # in float32, before any cast
    model.encoder.to(dtype)  # the mel front end and the statistics stay float32
    return model.eval().requires_grad_(False)


def load_audio_encoder(
    vae_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> AudioEncoder:
    """Load the encoder half of MMAudio's `v1-16.pth` (raw weights) or of ComfyUI's single MMAudio VAE file
    (`vae.*` with normalised weights + `vocoder.*`). The .pth is read with torch.load(weights_only=True)."""
    sd = read_checkpoint(vae_path, "MMAudio audio VAE")
    name = Path(vae_path).name
    comfy = split_comfy_file(sd)
    normalized = comfy is not None
    if normalized:
        sd = comfy[0]
    return audio_encoder_from_state_dict(sd, dtype, normalized=normalized, source=name).to(device)


def build_demo_audio_encoder(
    seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> AudioEncoder:
    """A tiny MMAudio-shaped audio encoder (hidden 16) with deterministic weights, no file: the encoder half that
    goes with mmaudio_vae.build_demo_audio_decoder (shapes only; its weights are not trained to invert it)."""
    g = torch.Generator().manual_seed(seed)
    enc = fill_demo_weights_(AudioEncoder(MelVAEConfig.tiny()), g)
    enc.normalize_weights_().eval().requires_grad_(False)
    enc.encoder.to(dtype)
    return enc.to(device)
