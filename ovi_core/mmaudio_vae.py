# Math follows MMAudio's 16 kHz mel VAE (hkchengrex/MMAudio, MIT licence), built from EDM2's magnitude-preserving layers (Karras et al. 2024). The code is ours.
"""MMAudio 16 kHz audio VAE decoder and the complete audio decoder (VAE + BigVGAN vocoder).

    dec = load_audio_decoder("v1-16.pth", "best_netG.pt")      # MMAudio's own files
    dec = load_audio_decoder("mmaudio_vae_comfy.safetensors")   # ComfyUI's single-file layout (vae.* + vocoder.*)
    wav = dec.decode(latent)                                    # [B, 20, L] -> [B, 1, 512 L] at 16 kHz

The VAE decoder maps a latent [B, 20, L] to a normalised log10-mel [B, 80, 2L] through bias-free 1-D convolutions
whose weights are normalised once at load (w / |w| / sqrt(fan_in), per output channel: "forced weight
normalisation"), magnitude-preserving SiLU (silu / 0.596) and sums, pixel norm in every residual block, one
single-head attention layer and one 2x nearest upsampling; activations are clamped to +-256. The mel is then
un-normalised with the 80 per-bin `data_mean` / `data_std` stored in the file.

The encoder half (waveform -> mel -> latent) is in `mmaudio_encoder.py`; preparing user audio in `audio_input.py`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import filekinds, interrupt
from .bigvgan import BigVGAN, build_demo_vocoder, vocoder_from_state_dict
from .checkpoint_io import read_checkpoint
from .errors import OviInputError, WrongFileError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SAMPLES_PER_LATENT = 512  # 2 mel frames of 256 samples

# Released per-bin statistics of MMAudio's 80-bin log-mel (used only when a file lacks data_mean/data_std).
MEL_MEAN_80 = (
    -1.6058,
    -1.3676,
    -1.2520,
    -1.2453,
    -1.2078,
    -1.2224,
    -1.2419,
    -1.2439,
    -1.2922,
    -1.2927,
    -1.3170,
    -1.3543,
    -1.3401,
    -1.3836,
    -1.3907,
    -1.3912,
    -1.4313,
    -1.4152,
    -1.4527,
    -1.4728,
    -1.4568,
    -1.5101,
    -1.5051,
    -1.5172,
    -1.5623,
    -1.5373,
    -1.5746,
    -1.5687,
    -1.6032,
    -1.6131,
    -1.6081,
    -1.6331,
    -1.6489,
    -1.6489,
    -1.6700,
    -1.6738,
    -1.6953,
    -1.6969,
    -1.7048,
    -1.7280,
    -1.7361,
    -1.7495,
    -1.7658,
    -1.7814,
    -1.7889,
    -1.8064,
    -1.8221,
    -1.8377,
    -1.8417,
    -1.8643,
    -1.8857,
    -1.8929,
    -1.9173,
    -1.9379,
    -1.9531,
    -1.9673,
    -1.9824,
    -2.0042,
    -2.0215,
    -2.0436,
    -2.0766,
    -2.1064,
    -2.1418,
    -2.1855,
    -2.2319,
    -2.2767,
    -2.3161,
    -2.3572,
    -2.3954,
    -2.4282,
    -2.4659,
    -2.5072,
    -2.5552,
    -2.6074,
    -2.6584,
    -2.7107,
    -2.7634,
    -2.8266,
    -2.8981,
    -2.9673,
)
MEL_STD_80 = (
    1.0291,
    1.0411,
    1.0043,
    0.9820,
    0.9677,
    0.9543,
    0.9450,
    0.9392,
    0.9343,
    0.9297,
    0.9276,
    0.9263,
    0.9242,
    0.9254,
    0.9232,
    0.9281,
    0.9263,
    0.9315,
    0.9274,
    0.9247,
    0.9277,
    0.9199,
    0.9188,
    0.9194,
    0.9160,
    0.9161,
    0.9146,
    0.9161,
    0.9100,
    0.9095,
    0.9145,
    0.9076,
    0.9066,
    0.9095,
    0.9032,
    0.9043,
    0.9038,
    0.9011,
    0.9019,
    0.9010,
    0.8984,
    0.8983,
    0.8986,
    0.8961,
    0.8962,
    0.8978,
    0.8962,
    0.8973,
    0.8993,
    0.8976,
    0.8995,
    0.9016,
    0.8982,
    0.8972,
    0.8974,
    0.8949,
    0.8940,
    0.8947,
    0.8936,
    0.8939,
    0.8951,
    0.8956,
    0.9017,
    0.9167,
    0.9436,
    0.9690,
    1.0003,
    1.0225,
    1.0381,
    1.0491,
    1.0545,
    1.0604,
    1.0761,
    1.0929,
    1.1089,
    1.1196,
    1.1176,
    1.1156,
    1.1117,
    1.1070,
)


@dataclass(frozen=True)
class MelVAEConfig:
    data_dim: int = 80  # mel bins
    embed_dim: int = 20  # latent channels
    hidden_dim: int = 384
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    upsample_level: int = 1  # the decoder doubles time after this level (encoder down_layers=[0] shifted by one)
    clip_act: float = 256.0

    @classmethod
    def full(cls) -> MelVAEConfig:
        return cls()

    @classmethod
    def tiny(cls) -> MelVAEConfig:
        """The golden-vector size: hidden_dim 16."""
        return cls(hidden_dim=16)


# ----------------------------------------------------------------------------------------------------------
# Magnitude-preserving pieces


def _unit_norm(x: torch.Tensor, dim, eps: float = 1e-4) -> torch.Tensor:
    """x / (eps + |x| / sqrt(n)) with the norm taken over `dim` (n elements), computed in float32."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))
    return x / norm.to(x.dtype)


def _mp_silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x) / 0.596


def _mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.3) -> torch.Tensor:
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def normalize_mp_weight(w: torch.Tensor) -> torch.Tensor:
    """The load-time 'remove weight norm' of an MP conv: unit norm per output channel, then / sqrt(fan_in)."""
    w32 = _unit_norm(w.float(), dim=tuple(range(1, w.dim())))
    return (w32 / math.sqrt(w[0].numel())).to(w.dtype)


def normalize_mp_convs_(module: nn.Module) -> nn.Module:
    """normalize_mp_weight applied in place to every MPConv1d of ``module`` (the decoder's and the encoder's)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, MPConv1d):
                m.weight.copy_(normalize_mp_weight(m.weight))
    return module


class MPConv1d(nn.Module):
    """Bias-free 1-D convolution with 'same' padding; the weight is already normalised when it is used."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, kernel))

    def forward(self, x: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if gain is None else self.weight * gain
        return F.conv1d(x, w, padding=w.shape[-1] // 2)


class ResBlock1d(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = MPConv1d(cin, cout, 3)
        self.conv2 = MPConv1d(cout, cout, 3)
        self.nin_shortcut = MPConv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _unit_norm(x, dim=1)  # pixel norm over channels
        h = self.conv2(_mp_silu(self.conv1(_mp_silu(x))))
        skip = self.nin_shortcut(x) if self.nin_shortcut is not None else x
        return _mp_sum(skip, h, 0.3)


class Attention1d(nn.Module):
    """Single-head self-attention over time with unit-normalised q, k, v."""

    def __init__(self, dim: int):
        super().__init__()
        self.qkv = MPConv1d(dim, dim * 3, 1)
        self.proj_out = MPConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        y = self.qkv(x).reshape(b, 1, c, 3, n)  # channel 3i+j is feature i of q (j=0), k (1), v (2)
        q, k, v = _unit_norm(y, dim=2).unbind(3)  # each [B, 1, C, L]
        h = F.scaled_dot_product_attention(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3))
        return _mp_sum(x, self.proj_out(h.transpose(2, 3).reshape(b, c, n)), 0.3)


class Upsample1d(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = MPConv1d(dim, dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.repeat_interleave(2, dim=-1))  # nearest 2x


class MelDecoder(nn.Module):
    def __init__(self, cfg: MelVAEConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.hidden_dim * m for m in cfg.ch_mult]
        cin = widths[-1]
        self.conv_in = MPConv1d(cfg.embed_dim, cin, 3)
        self.mid = nn.Module()
        self.mid.block_1 = ResBlock1d(cin, cin)
        self.mid.attn_1 = Attention1d(cin)
        self.mid.block_2 = ResBlock1d(cin, cin)
        self.up = nn.ModuleList([nn.Module() for _ in widths])  # up[i] works at width widths[i]; run high i first
        for level in reversed(range(len(widths))):
            cout = widths[level]
            self.up[level].block = nn.ModuleList(
                ResBlock1d(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks + 1)
            )
            self.up[level].upsample = Upsample1d(cout) if level == cfg.upsample_level else None
            cin = cout
        self.conv_out = MPConv1d(cin, cfg.data_dim, 3)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [B, embed, L] -> [B, data_dim, 2L] (normalised mel)
        clip = self.cfg.clip_act
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h))).clamp(-clip, clip)
        for level in reversed(range(len(self.up))):
            interrupt.check("decoding the audio")
            for block in self.up[level].block:
                h = block(h).clamp(-clip, clip)
            if self.up[level].upsample is not None:
                h = self.up[level].upsample(h)
        return self.conv_out(_mp_silu(h), gain=self.learnable_gain + 1)


class MelVAEDecoder(nn.Module):
    """The decoder half of MMAudio's VAE plus the mel statistics: latent [B, 20, L] -> log10-mel [B, 80, 2L]."""

    def __init__(self, cfg: MelVAEConfig = MelVAEConfig()):
        super().__init__()
        self.cfg = cfg
        self.decoder = MelDecoder(cfg)
        self.register_buffer("data_mean", torch.tensor(MEL_MEAN_80).view(1, -1, 1))
        self.register_buffer("data_std", torch.tensor(MEL_STD_80).view(1, -1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) * self.data_std + self.data_mean

    def normalize_weights_(self) -> MelVAEDecoder:
        """Apply the one-time weight normalisation to every MP conv (raw MMAudio checkpoints need it)."""
        return normalize_mp_convs_(self)


class AudioDecoder(nn.Module):
    """MMAudio VAE decoder + BigVGAN: latent [B, 20, L] -> waveform [B, 1, 512 L] at 16 kHz."""

    sample_rate = SAMPLE_RATE

    def __init__(self, vae: MelVAEDecoder, vocoder: BigVGAN):
        super().__init__()
        self.vae = vae
        self.vocoder = vocoder

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.decoder.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vae.decoder.conv_in.weight.device

    @torch.inference_mode()
    def decode_mel(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [B, 20, L] -> log10-mel [B, 80, 2L] (float32)."""
        self._check_latent(latent)
        return self.vae(latent.to(self.device, self.dtype)).float()

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [B, 20, L] (the sampler's [L, 20] transposed, batch first) -> float32 waveform [B, 1, 512 L]."""
        mel = self.decode_mel(latent)
        return self.vocoder(mel.to(self.dtype)).float()

    def _check_latent(self, latent: torch.Tensor) -> None:
        c = self.vae.cfg.embed_dim
        if not isinstance(latent, torch.Tensor) or latent.dim() != 3:
            shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise OviInputError(f"audio latent must be a 3-D tensor [batch, {c}, length]; got {shape}")
        if latent.shape[1] != c:
            hint = " It looks channel-last; pass latent.transpose(1, 2)." if latent.shape[2] == c else ""
            raise OviInputError(
                f"audio latent has {latent.shape[1]} channels but the MMAudio VAE decodes {c}-channel latents "
                f"(shape {tuple(latent.shape)}).{hint}"
            )
        if latent.shape[2] < 1:
            raise OviInputError(f"audio latent is empty: shape {tuple(latent.shape)}")
        if not torch.isfinite(latent).all():
            raise OviInputError(
                f"audio latent contains {int((~torch.isfinite(latent)).sum())} NaN/inf values; the sampling run "
                "diverged (try float32/bfloat16 instead of float16, a lower audio guidance scale, or another seed)"
            )


# ----------------------------------------------------------------------------------------------------------
# Files

def split_comfy_file(sd: dict) -> tuple[dict, dict] | None:
    """ComfyUI's MMAudio VAE file (filekinds "mmaudio_vae_vocoder": `vae.*` with the weights already normalised,
    `vocoder.*` with weight norm folded) as (VAE state dict, vocoder state dict); None for any other file."""
    if filekinds.identify(sd).kind.name != "mmaudio_vae_vocoder":
        return None
    return filekinds.strip_prefix(sd, "vae."), filekinds.strip_prefix(sd, "vocoder.")


def audio_vae_state_dict(sd: dict, source: str, get_it: str) -> dict:
    """The MMAudio VAE tensors of ``sd`` without any wrapper prefix (`vae.` in ComfyUI's file); WrongFileError naming
    what the file is and which loader takes it when the file-kind table says it is not an MMAudio VAE."""
    found = filekinds.identify(sd)
    if found.kind.part != "audio_vae":
        raise WrongFileError(f"{filekinds.wrong_part_message(found, 'audio_vae', source)}. {get_it}")
    if found.kind.name == "mmaudio_vae_vocoder":
        return filekinds.strip_prefix(sd, "vae.")
    return filekinds.strip_prefix(sd, found.prefix) if found.prefix else sd


def load_vae_half_(model: nn.Module, sd: dict, half: str, source: str, extra_ok: bool) -> None:
    """Load one half of MMAudio's VAE into ``model`` in float32: the ``{half}.*`` tensors (half = "encoder" or
    "decoder") and the mel statistics ``data_mean`` / ``data_std`` (the released 80-bin ones where the file has none).
    Missing tensors or another layout raise WrongFileError naming ``source``; ``{half}.*`` tensors the model does not
    have are ignored where ``extra_ok``, a layout error otherwise."""
    wanted = model.state_dict()
    half_sd = {k: v for k, v in sd.items() if k.startswith(half + ".")}
    for name in ("data_mean", "data_std"):
        if name in sd:
            half_sd[name] = sd[name].reshape(1, -1, 1)
        else:
            logger.info("%s has no %s; using the released MMAudio 80-bin statistics", source, name)
            half_sd[name] = wanted[name]
    missing = sorted(set(wanted) - set(half_sd))
    if missing:
        raise WrongFileError(
            f"{source} is missing {len(missing)} VAE {half} tensors (e.g. {missing[0]}); the file is incomplete"
        )
    if extra_ok:
        half_sd = {k: half_sd[k] for k in wanted}
    try:
        model.load_state_dict({k: v.float() for k, v in half_sd.items()}, strict=True)
    except RuntimeError as exc:
        raise WrongFileError(f"{source} does not match the MMAudio VAE {half} layout: {str(exc)[:300]}") from exc


def fill_demo_weights_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Deterministic demo weights for a tiny MMAudio-shaped VAE half: gains 0.1·N(0, 1), every other weight
    N(0, 1) / sqrt(fan-in)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("learnable_gain"):
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p[0].numel()))
    return module


def mel_vae_from_state_dict(
    sd: dict, dtype: torch.dtype = torch.float32, normalized: bool = False, source: str = "audio VAE"
) -> MelVAEDecoder:
    """Build the VAE decoder from MMAudio key names. `normalized=False` (raw v1-16.pth weights) normalises once."""
    sd = audio_vae_state_dict(sd, source, "Ovi needs MMAudio's `v1-16.pth` (hkchengrex/MMAudio, ext_weights/) or "
                                          "ComfyUI's MMAudio VAE file")
    if "decoder.conv_in.weight" not in sd or "decoder.conv_out.weight" not in sd:
        raise WrongFileError(f"{source} has no `decoder.conv_in` / `decoder.conv_out` tensors: it holds only the encoder "
                             "half of MMAudio's VAE, or is incomplete. Ovi needs MMAudio's `v1-16.pth`")
    w_out = sd["decoder.conv_out.weight"]
    cfg = MelVAEConfig(data_dim=w_out.shape[0], embed_dim=sd["decoder.conv_in.weight"].shape[1],
                       hidden_dim=w_out.shape[1])
    if cfg.data_dim != 80:
        raise WrongFileError(f"{source} has {cfg.data_dim} mel bins; only MMAudio's 16 kHz (80-bin) VAE is supported")
    model = MelVAEDecoder(cfg)
    load_vae_half_(model, sd, "decoder", source, extra_ok=True)
    if not normalized:
        model.normalize_weights_()  # in float32, before any cast
    return model.to(dtype).eval().requires_grad_(False)


def load_audio_decoder(
    vae_path: str | Path,
    vocoder_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AudioDecoder:
    """Load MMAudio's `v1-16.pth` + `best_netG.pt`, or ComfyUI's single MMAudio VAE file (vocoder included).

    Both .pth files are read with torch.load(weights_only=True)."""
    sd = read_checkpoint(vae_path, "MMAudio audio VAE")
    name = Path(vae_path).name
    comfy = split_comfy_file(sd)
    if comfy is not None:
        vae = mel_vae_from_state_dict(comfy[0], dtype, normalized=True, source=name)
        voc_sd, voc_source = comfy[1], name
    else:  # another part's file (best_netG.pt too) is named, with the loader that takes it, by the file-kind table
        vae = mel_vae_from_state_dict(sd, dtype, normalized=False, source=name)
        if vocoder_path is None:
            raise OviInputError(
                f"{name} holds only MMAudio's VAE; also pass the BigVGAN vocoder file `best_netG.pt` (hkchengrex/MMAudio, ext_weights/)"
            )
        voc_sd = None
    if vocoder_path is not None:
        voc_sd = read_checkpoint(vocoder_path, "BigVGAN vocoder")
        voc_source = Path(vocoder_path).name
    vocoder = vocoder_from_state_dict(voc_sd, dtype=dtype, source=voc_source)
    return AudioDecoder(vae, vocoder).to(device)


def audio_decoder_from_state_dicts(vae_sd: dict, vocoder_sd: dict, dtype: torch.dtype = torch.float32) -> AudioDecoder:
    """Build from in-memory MMAudio-layout state dicts (raw VAE weights, weight-norm or folded vocoder)."""
    return AudioDecoder(mel_vae_from_state_dict(vae_sd, dtype), vocoder_from_state_dict(vocoder_sd, dtype))


def build_demo_audio_decoder(
    seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> AudioDecoder:
    """A tiny MMAudio-shaped audio decoder (hidden 16, vocoder 64 channels) with deterministic weights, no file."""
    g = torch.Generator().manual_seed(seed)
    vae = fill_demo_weights_(MelVAEDecoder(MelVAEConfig.tiny()), g)
    vae.normalize_weights_().eval().requires_grad_(False)
    return AudioDecoder(vae, build_demo_vocoder(seed + 1)).to(device, dtype)
