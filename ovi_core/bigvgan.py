# Math follows BigVGAN v1 (NVIDIA/BigVGAN, MIT licence; anti-aliased activations after alias-free-torch, Apache-2.0) as used by MMAudio. The code is ours.
"""BigVGAN v1 vocoder: log-mel [B, 80, frames] -> waveform [B, 1, 256 * frames] at 16 kHz.

MMAudio's 16 kHz vocoder (`best_netG.pt`, weights under the key "generator"): six transposed-conv upsamplers
(x4 x4 x2 x2 x2 x2 = 256 = the mel hop), each followed by three "AMP" residual blocks (kernels 3/7/11, dilations
1/3/5) whose SnakeBeta activations run at twice the sample rate between two Kaiser-sinc low-pass filters.
Weight normalisation is folded into plain weights once at load; both key styles of torch's weight norm
(`weight_g`/`weight_v` and `parametrizations.weight.original0/1`) and already-folded `weight` keys are accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import filekinds, interrupt
from .errors import WrongFileError


@dataclass(frozen=True)
class BigVGANConfig:
    num_mels: int = 80
    upsample_initial_channel: int = 1536
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    # resblock '1', activation 'snakebeta' with log-scale alpha/beta: the only variant MMAudio uses

    @classmethod
    def full(cls) -> BigVGANConfig:
        return cls()

    @classmethod
    def tiny(cls) -> BigVGANConfig:
        """The golden-vector size: released config except upsample_initial_channel 64."""
        return cls(upsample_initial_channel=64)


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass filter [1, 1, K], normalised to unit sum (the anti-aliasing filter)."""
    half = kernel_size // 2
    atten = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95  # Kaiser's attenuation estimate (dB)
    if atten > 50.0:
        beta = 0.1102 * (atten - 8.7)
    elif atten >= 21.0:
        beta = 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    if kernel_size % 2 == 0:
        t = torch.arange(-half, half) + 0.5
    else:
        t = torch.arange(kernel_size) - half
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return (taps / taps.sum()).view(1, 1, kernel_size)


class SnakeBeta(nn.Module):
    """x + sin^2(x * e^alpha) / e^beta, per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))  # log scale
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha)[None, :, None]
        beta = torch.exp(self.beta)[None, :, None]
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class _UpSample2x(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("filter", kaiser_sinc_filter(0.25, 0.3, 12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, 2T]
        x = F.pad(x, (5, 5), mode="replicate")
        x = 2 * F.conv_transpose1d(x, self.filter.expand(x.shape[1], -1, -1), stride=2, groups=x.shape[1])
        return x[..., 15:-15]


class _LowPass(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("filter", kaiser_sinc_filter(0.25, 0.3, 12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, 2T] -> [B, C, T]
        x = F.pad(x, (5, 6), mode="replicate")
        return F.conv1d(x, self.filter.expand(x.shape[1], -1, -1), stride=2, groups=x.shape[1])


class _DownSample2x(nn.Module):
    def __init__(self):
        super().__init__()
        self.lowpass = _LowPass()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class AliasFreeSnake(nn.Module):
    """SnakeBeta evaluated at 2x the sample rate: upsample, activate, low-pass and decimate."""

    def __init__(self, channels: int):
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = _UpSample2x()
        self.downsample = _DownSample2x()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


class AMPBlock(nn.Module):
    """Three (activation, dilated conv, activation, conv) residual steps."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in dilations
        )
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations)
        self.activations = nn.ModuleList(AliasFreeSnake(channels) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2, strict=True)):
            y = c2(self.activations[2 * i + 1](c1(self.activations[2 * i](x))))
            x = y + x
        return x


class BigVGAN(nn.Module):
    def __init__(self, cfg: BigVGANConfig = BigVGANConfig()):
        super().__init__()
        self.cfg = cfg
        ch = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.num_mels, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)):
            cin, cout = ch // 2**i, ch // 2 ** (i + 1)
            self.ups.append(nn.ModuleList([nn.ConvTranspose1d(cin, cout, k, u, padding=(k - u) // 2)]))
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilations, strict=True):
                self.resblocks.append(AMPBlock(cout, rk, rd))
        self.activation_post = AliasFreeSnake(cout)
        self.conv_post = nn.Conv1d(cout, 1, 7, padding=3)

    @torch.inference_mode()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, num_mels, frames] (log10 magnitude) -> waveform [B, 1, hop * frames] in [-1, 1]."""
        n = len(self.cfg.resblock_kernel_sizes)
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            interrupt.check("the vocoder")
            x = up[0](x)
            # average of the parallel AMP blocks (summed in order, as the reference does)
            acc = self.resblocks[i * n](x)
            for j in range(1, n):
                acc += self.resblocks[i * n + j](x)
            x = acc / n
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x)


# ----------------------------------------------------------------------------------------------------------
# Weights


def fold_weight_norm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace weight-norm pairs by plain weights: w = g * v / |v| (norm over all dims but the first).

    Accepts `X.weight_g`/`X.weight_v` (old torch API) and `X.parametrizations.weight.original0/1` (new API)."""
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        for g_suffix, v_suffix in (
            (".weight_g", ".weight_v"),
            (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
        ):
            if k.endswith(g_suffix):
                pairs.setdefault(k[: -len(g_suffix)], {})["g"] = v
                break
            if k.endswith(v_suffix):
                pairs.setdefault(k[: -len(v_suffix)], {})["v"] = v
                break
        else:
            out[k] = v
    for name, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise WrongFileError(f"vocoder weight-norm pair for `{name}` is incomplete (found only {sorted(gv)})")
        out[name + ".weight"] = _weight_norm(gv["v"].float(), gv["g"].float())
    return out


def _weight_norm(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    # torch's own kernel (what weight-norm removal uses) reproduces the reference bit for bit
    if hasattr(torch, "_weight_norm"):
        return torch._weight_norm(v, g, 0)
    return v * (g / v.norm(dim=tuple(range(1, v.dim())), keepdim=True))


def vocoder_from_state_dict(sd: dict, dtype: torch.dtype = torch.float32, source: str = "vocoder") -> BigVGAN:
    """Build BigVGAN from a state dict in any of the accepted layouts (sizes are read from the weights)."""
    if "generator" in sd and isinstance(sd["generator"], dict):  # MMAudio's best_netG.pt
        sd = sd["generator"]
    found = filekinds.identify(sd)
    if found.kind.name == "mmaudio_vae_vocoder":  # ComfyUI's MMAudio file: the vocoder is its `vocoder.*` half
        sd = filekinds.strip_prefix(sd, "vocoder.")
    elif found.kind.part == "vocoder" and found.prefix:  # saved from a wrapper (`vocoder.`)
        sd = filekinds.strip_prefix(sd, found.prefix)
    if found.kind.part != "vocoder" and found.kind.name != "mmaudio_vae_vocoder":
        raise WrongFileError(
            f"{filekinds.wrong_part_message(found, 'vocoder', source)}. Ovi needs MMAudio's "
            "`best_netG.pt` (hkchengrex/MMAudio, ext_weights/)"
        )
    sd = fold_weight_norm(sd)
    if "conv_pre.weight" not in sd or "conv_post.weight" not in sd:
        raise WrongFileError(f"{source} has no `conv_pre` / `conv_post` weights: the BigVGAN vocoder file is incomplete. "
                             "Ovi needs MMAudio's `best_netG.pt` (hkchengrex/MMAudio, ext_weights/)")
    ref = BigVGANConfig()
    n_ups = sum(1 for k in sd if k.startswith("ups.") and k.endswith(".0.weight"))
    kernels = tuple(sd[f"ups.{i}.0.weight"].shape[-1] for i in range(n_ups)) if n_ups else ()
    if kernels != ref.upsample_kernel_sizes:
        raise WrongFileError(
            f"{source} is a BigVGAN with upsample kernels {kernels}; only the 16 kHz MMAudio vocoder "
            f"(kernels {ref.upsample_kernel_sizes}, 256x upsampling) is supported"
        )
    cfg = BigVGANConfig(
        num_mels=sd["conv_pre.weight"].shape[1], upsample_initial_channel=sd["conv_pre.weight"].shape[0]
    )
    with torch.device("meta"):
        model = BigVGAN(cfg)
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(sd))
    if missing:
        raise WrongFileError(
            f"{source} is missing {len(missing)} vocoder tensors (e.g. {missing[0]}); the file is incomplete"
        )
    try:
        model.load_state_dict({k: sd[k].to(dtype) for k in wanted}, strict=True, assign=True)
    except RuntimeError as exc:
        raise WrongFileError(f"{source} does not match the BigVGAN v1 layout: {str(exc)[:300]}") from exc
    return model.eval().requires_grad_(False)


def build_demo_vocoder(seed: int = 0) -> BigVGAN:
    """Tiny BigVGAN with deterministic random weights (weight-norm style: g = 0.5 + 0.5 U, v = N / sqrt(fan_in))."""
    g = torch.Generator().manual_seed(seed)
    model = BigVGAN(BigVGANConfig.tiny())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                v = torch.randn(p.shape, generator=g)
                gain = 0.5 + 0.5 * torch.rand((p.shape[0],) + (1,) * (p.dim() - 1), generator=g)
                p.copy_(v * gain / v.norm(dim=tuple(range(1, v.dim())), keepdim=True))
    return model.eval().requires_grad_(False)
