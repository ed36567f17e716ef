# Math follows the Wan2.2 video VAE (Wan-Video/Wan2.2, as vendored by character-ai/Ovi; Apache-2.0). The code is ours.
"""Wan2.2 video VAE: 48-channel latents, 16x spatial and 4x temporal compression, causal in time.

    vae = load_video_vae("Wan2.2_VAE.pth")            # or ComfyUI's wan2.2_vae.safetensors (same key names)
    frames = vae.decode(latent)                       # [B, 48, F, h, w] -> [B, 3, 1+4(F-1), 16h, 16w] in [-1, 1]
    frames = vae.decode(latent, tile=(32, 32))        # same picture with less memory (spatial tiles, blended seams)
    latent = vae.encode(frames)                       # [B, 3, 1+4k, H, W] in [-1, 1] -> normalised latent

Decoding runs one latent frame at a time, like the reference: every causal convolution keeps the last two
frames it has seen (its "cache") so the next frame continues the sequence; no activation of the whole clip is
ever held. Tiling splits the expensive upsampling half of the decoder into overlapping spatial tiles; the cheap
low-resolution trunk (with the one global attention layer) always sees the whole frame, so tiling only changes
the result near tile seams, where overlapping tiles are cross-faded.

Module attribute names equal the checkpoint keys (`decoder.upsamples.0.upsamples.3.time_conv.weight`, ...), so
the original `Wan2.2_VAE.pth` and ComfyUI's repackaged `wan2.2_vae.safetensors` load without renaming.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import filekinds, interrupt
from .checkpoint_io import read_checkpoint
from .errors import OviInputError, WrongFileError

logger = logging.getLogger(__name__)

# Per-channel statistics of the released Wan2.2 latent space (the model's latents are (z - mean) / std).
WAN22_LATENT_MEAN = (
    -0.2289,
    -0.0052,
    -0.1323,
    -0.2339,
    -0.2799,
    0.0174,
    0.1838,
    0.1557,
    -0.1382,
    0.0542,
    0.2813,
    0.0891,
    0.1570,
    -0.0098,
    0.0375,
    -0.1825,
    -0.2246,
    -0.1207,
    -0.0698,
    0.5109,
    0.2665,
    -0.2108,
    -0.2158,
    0.2502,
    -0.2055,
    -0.0322,
    0.1109,
    0.1567,
    -0.0729,
    0.0899,
    -0.2799,
    -0.1230,
    -0.0313,
    -0.1649,
    0.0117,
    0.0723,
    -0.2839,
    -0.2083,
    -0.0520,
    0.3748,
    0.0152,
    0.1957,
    0.1433,
    -0.2944,
    0.3573,
    -0.0548,
    -0.1681,
    -0.0667,
)
WAN22_LATENT_STD = (
    0.4765,
    1.0364,
    0.4514,
    1.1677,
    0.5313,
    0.4990,
    0.4818,
    0.5013,
    0.8158,
    1.0344,
    0.5894,
    1.0901,
    0.6885,
    0.6165,
    0.8454,
    0.4978,
    0.5759,
    0.3523,
    0.7135,
    0.6804,
    0.5833,
    1.4146,
    0.8986,
    0.5659,
    0.7069,
    0.5338,
    0.4889,
    0.4917,
    0.4069,
    0.4999,
    0.6866,
    0.4093,
    0.5709,
    0.6065,
    0.6415,
    0.4944,
    0.5726,
    1.2042,
    0.5458,
    1.6887,
    0.3971,
    1.0600,
    0.3943,
    0.5537,
    0.5444,
    0.4089,
    0.7468,
    0.7744,
)

_CACHE_FRAMES = 2  # a temporal kernel of 3 needs the 2 previous input frames
_PATCH = 2  # pixels are folded 2x2 into channels before the encoder / unfolded after the decoder


@dataclass(frozen=True)
class WanVAEConfig:
    dim: int = 160  # encoder base width
    dec_dim: int = 256  # decoder base width
    z_dim: int = 48
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)

    @classmethod
    def full(cls) -> WanVAEConfig:
        return cls()

    @classmethod
    def tiny(cls) -> WanVAEConfig:
        """The golden-vector size: same depth as the released VAE, widths 8."""
        return cls(dim=8, dec_dim=8)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> WanVAEConfig:
        """Read the widths from the weight shapes (the depth is fixed by the architecture)."""
        dec_dim = sd["decoder.head.0.gamma"].shape[0]
        z_dim = sd["decoder.conv1.weight"].shape[1]
        dim = sd["encoder.conv1.weight"].shape[0] if "encoder.conv1.weight" in sd else cls.dim
        return cls(dim=dim, dec_dim=dec_dim, z_dim=z_dim)


# ----------------------------------------------------------------------------------------------------------
# Building blocks. `state` is a dict {module: tensor} carrying each causal layer's memory of earlier chunks.


class CausalConv3d(nn.Conv3d):
    """Conv3d whose time padding is all in front (frame t never sees frame t+1)."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__(cin, cout, kernel, stride=stride, padding=0)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        self.front = 2 * pt
        self.space_pad = (pw, pw, ph, ph)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        front = self.front
        if past is not None and front > 0:
            x = torch.cat([past.to(x.device), x], dim=2)
            front -= past.shape[2]
        x = F.pad(x, self.space_pad + (front, 0))
        if _use_onednn(x):
            try:
                return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation, 1)
            except RuntimeError:
                _ONEDNN["ok"] = False
        return super().forward(x)


# PyTorch's CPU heuristic picks oneDNN for conv3d only when batch*channels*time*height > 20480, so batch-1 video
# chunks of 1-4 frames fall back to its im2col kernel, 5-8x slower and with a large im2col buffer. For float32
# inference on CPU we call the oneDNN kernel directly (results differ from the fallback by float rounding only).
_ONEDNN = {"ok": hasattr(torch, "mkldnn_convolution") and torch.backends.mkldnn.is_available()}


def _use_onednn(x: torch.Tensor) -> bool:
    return _ONEDNN["ok"] and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


def _streamed(conv: CausalConv3d, x: torch.Tensor, state: dict) -> torch.Tensor:
    """Run `conv` on one chunk of frames, continuing from the frames it saw in earlier chunks."""
    past = state.get(conv)
    keep = x[:, :, -_CACHE_FRAMES:].clone()
    if keep.shape[2] < _CACHE_FRAMES and past is not None:
        keep = torch.cat([past[:, :, -1:], keep], dim=2)
    out = conv(x, past)
    state[conv] = keep
    return out


class RMSNorm(nn.Module):
    """x / |x|_channels * sqrt(C) * gamma (L2 normalisation over the channel axis)."""

    def __init__(self, dim: int, spatial_dims: int = 3):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim,) + (1,) * spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


def _frames_to_images(x: torch.Tensor) -> torch.Tensor:  # [B, C, T, H, W] -> [B*T, C, H, W]
    return x.transpose(1, 2).flatten(0, 1)


def _images_to_frames(x: torch.Tensor, batch: int) -> torch.Tensor:  # [B*T, C, H, W] -> [B, C, T, H, W]
    return x.unflatten(0, (batch, -1)).transpose(1, 2)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        # indices match the checkpoint: residual.{0,3}.gamma, residual.{2,6}.weight
        self.residual = nn.Sequential(
            RMSNorm(cin), nn.SiLU(), CausalConv3d(cin, cout, 3, padding=1),
            RMSNorm(cout), nn.SiLU(), nn.Identity(), CausalConv3d(cout, cout, 3, padding=1),
        )  # fmt: skip
        self.shortcut = CausalConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        skip = self.shortcut(x)
        r = self.residual
        x = _streamed(r[2], F.silu(r[0](x)), state)
        x = _streamed(r[6], F.silu(r[3](x)), state)
        return x + skip


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame separately."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, spatial_dims=2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.to_qkv(self.norm(_frames_to_images(x)))  # [B*T, 3C, H, W]
        y = y.reshape(b * t, 1, 3 * c, h * w).transpose(2, 3)  # [B*T, 1, HW, 3C]
        q, k, v = y.contiguous().chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)  # [B*T, 1, HW, C]
        y = y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        return _images_to_frames(self.proj(y), b) + x


class Resample(nn.Module):
    """2x spatial up/down-sampling, optionally with a 2x temporal step done by a causal `time_conv`."""

    def __init__(self, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        # resample.0 is parameter-free (nearest upsampling or the asymmetric zero pad); resample.1 is the conv
        if mode.startswith("up"):
            self.resample = nn.Sequential(nn.Identity(), nn.Conv2d(dim, dim, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        b = x.shape[0]
        if self.mode == "upsample3d":
            x = self._double_frames(x, state)
        y = _frames_to_images(x)
        if self.mode.startswith("up"):
            y = y.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)  # nearest, exact for 2x
        x = _images_to_frames(self.resample(y), b)
        if self.mode == "downsample3d":
            x = self._halve_frames(x, state)
        return x

    def _double_frames(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        if self.time_conv not in state:
            # first chunk (the lone first frame) is not doubled; later chunks see zeros in its place
            state[self.time_conv] = x.new_zeros(x.shape[:2] + (_CACHE_FRAMES,) + x.shape[3:])
            return x
        b, c, t, h, w = x.shape
        y = _streamed(self.time_conv, x, state).reshape(b, 2, c, t, h, w)  # two output frames per input frame
        return torch.stack((y[:, 0], y[:, 1]), dim=3).reshape(b, c, 2 * t, h, w)

    def _halve_frames(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        past = state.get(self.time_conv)
        state[self.time_conv] = x[:, :, -1:].clone()
        if past is None:  # first chunk (one frame) passes through
            return x
        return self.time_conv(torch.cat([past, x], dim=2))


class DupUp3D(nn.Module):
    """Parameter-free shortcut of an upsampling stage: repeat channels, then move them into time/space."""

    def __init__(self, cin: int, cout: int, factor_t: int, factor_s: int):
        super().__init__()
        self.cout, self.ft, self.fs = cout, factor_t, factor_s
        self.repeats = cout * factor_t * factor_s * factor_s // cin

    def forward(self, x: torch.Tensor, first_chunk: bool) -> torch.Tensor:
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1)
        x = x.view(b, self.cout, self.ft, self.fs, self.fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(b, self.cout, t * self.ft, h * self.fs, w * self.fs)
        return x[:, :, self.ft - 1 :] if first_chunk else x


class AvgDown3D(nn.Module):
    """Parameter-free shortcut of a downsampling stage: fold time/space into channels, average groups."""

    def __init__(self, cin: int, cout: int, factor_t: int, factor_s: int):
        super().__init__()
        self.cout, self.ft, self.fs = cout, factor_t, factor_s
        self.group = cin * factor_t * factor_s * factor_s // cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.ft, self.fs
        x = F.pad(x, (0, 0, 0, 0, (ft - x.shape[2] % ft) % ft, 0))
        b, c, t, h, w = x.shape
        x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.cout, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class UpStage(nn.Module):
    def __init__(self, cin: int, cout: int, num_blocks: int, up_time: bool, up_space: bool):
        super().__init__()
        blocks: list[nn.Module] = [ResidualBlock(cin if i == 0 else cout, cout) for i in range(num_blocks)]
        if up_space:
            blocks.append(Resample(cout, "upsample3d" if up_time else "upsample2d"))
        self.upsamples = nn.ModuleList(blocks)
        self.avg_shortcut = DupUp3D(cin, cout, 2 if up_time else 1, 2) if up_space else None

    def forward(self, x: torch.Tensor, state: dict, first_chunk: bool) -> torch.Tensor:
        y = x
        for block in self.upsamples:
            y = block(y, state)
        return y + self.avg_shortcut(x, first_chunk) if self.avg_shortcut is not None else y


class DownStage(nn.Module):
    def __init__(self, cin: int, cout: int, num_blocks: int, down_time: bool, down_space: bool):
        super().__init__()
        blocks: list[nn.Module] = [ResidualBlock(cin if i == 0 else cout, cout) for i in range(num_blocks)]
        if down_space:
            blocks.append(Resample(cout, "downsample3d" if down_time else "downsample2d"))
        self.downsamples = nn.ModuleList(blocks)
        self.avg_shortcut = AvgDown3D(cin, cout, 2 if down_time else 1, 2 if down_space else 1)

    def forward(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        y = x
        for block in self.downsamples:
            y = block(y, state)
        return y + self.avg_shortcut(x)


def _middle(dim: int) -> nn.ModuleList:
    return nn.ModuleList([ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim)])


def _head(dim: int, cout: int) -> nn.ModuleList:
    return nn.ModuleList([RMSNorm(dim), nn.SiLU(), CausalConv3d(dim, cout, 3, padding=1)])


class Decoder3d(nn.Module):
    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        mult = cfg.dim_mult
        dims = [cfg.dec_dim * m for m in (mult[-1],) + tuple(reversed(mult))]  # e.g. 256 * [4, 4, 4, 2, 1]
        up_time = tuple(reversed(cfg.temporal_downsample))
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0])
        self.upsamples = nn.ModuleList(
            UpStage(dims[i], dims[i + 1], cfg.num_res_blocks + 1, i < len(up_time) and up_time[i], i != len(mult) - 1)
            for i in range(len(mult))
        )
        self.head = _head(dims[-1], 3 * _PATCH * _PATCH)

    def trunk(self, z: torch.Tensor, state: dict) -> torch.Tensor:
        """Low-resolution part (input conv, res blocks, frame-wide attention): [B, z, T, h, w] -> [B, C, T, h, w]."""
        x = _streamed(self.conv1, z, state)
        for layer in self.middle:
            interrupt.check("decoding the video")
            x = layer(x, state)
        return x

    def upsampler(self, x: torch.Tensor, state: dict, first_chunk: bool) -> torch.Tensor:
        """Purely local part: [B, C, T, h, w] -> [B, 12, T', 8h, 8w] (T' = 1 for the first chunk, else 4T)."""
        for stage in self.upsamples:
            interrupt.check("decoding the video")
            x = stage(x, state, first_chunk)
        x = F.silu(self.head[0](x))
        return _streamed(self.head[2], x, state)


class Encoder3d(nn.Module):
    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        mult = cfg.dim_mult
        dims = [cfg.dim * m for m in (1,) + tuple(mult)]  # e.g. 160 * [1, 1, 2, 4, 4]
        down_time = cfg.temporal_downsample
        self.conv1 = CausalConv3d(3 * _PATCH * _PATCH, dims[0], 3, padding=1)
        self.downsamples = nn.ModuleList(
            DownStage(dims[i], dims[i + 1], cfg.num_res_blocks, i < len(down_time) and down_time[i], i != len(mult) - 1)
            for i in range(len(mult))
        )
        self.middle = _middle(dims[-1])
        self.head = _head(dims[-1], cfg.z_dim * 2)

    def forward(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        x = _streamed(self.conv1, x, state)
        for layer in list(self.downsamples) + list(self.middle):
            interrupt.check("encoding the image")
            x = layer(x, state)
        x = F.silu(self.head[0](x))
        return _streamed(self.head[2], x, state)


def _patchify(x: torch.Tensor) -> torch.Tensor:  # [B, C, T, 2H, 2W] -> [B, 4C, T, H, W], channel = c*4 + col*2 + row
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // _PATCH, _PATCH, w // _PATCH, _PATCH).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * _PATCH * _PATCH, t, h // _PATCH, w // _PATCH)


def _unpatchify(x: torch.Tensor) -> torch.Tensor:  # inverse of _patchify
    b, c4, t, h, w = x.shape
    x = x.view(b, c4 // (_PATCH * _PATCH), _PATCH, _PATCH, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c4 // (_PATCH * _PATCH), t, h * _PATCH, w * _PATCH)


# ----------------------------------------------------------------------------------------------------------
# The VAE


class WanVideoVAE(nn.Module):
    def __init__(self, cfg: WanVAEConfig = WanVAEConfig(), with_encoder: bool = True):
        super().__init__()
        self.cfg = cfg
        if with_encoder:
            self.encoder = Encoder3d(cfg)
            self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)  # -> posterior mean | log-variance
        else:
            self.encoder = self.conv1 = None
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)
        # not in the checkpoint: the released latent statistics
        self.register_buffer("latent_mean", torch.tensor(WAN22_LATENT_MEAN), persistent=False)
        self.register_buffer("latent_std", torch.tensor(WAN22_LATENT_STD), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    # -- decode -------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def decode(
        self,
        latent: torch.Tensor,
        tile: tuple[int, int] | None = None,
        tile_overlap: int = 16,
        clamp: bool = True,
        output_device: str | torch.device | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Normalised latent [B, 48, F, h, w] -> float32 frames [B, 3, 1+4(F-1), 16h, 16w] in [-1, 1].

        tile=(th, tw) decodes the upsampling half in spatial tiles of th x tw latent pixels that overlap by
        `tile_overlap` latent pixels; each tile drops the outer part of the overlap and the middle is cross-faded.
        Peak memory then scales with the tile instead of the frame. With the default overlap of 16 the result
        stays within ~1e-3 of untiled decoding (tiny test model); smaller overlaps save work but show seams.
        output_device: where the frames are assembled (default: the model's device); "cpu" keeps a long clip's
        frames out of GPU memory. progress(done, total) is called after each decoded piece and may raise
        (e.g. OviInterrupted) to stop; the checkers of ovi_core.interrupt are consulted per latent frame, tile and
        decoder stage.
        """
        self._check_latent(latent)
        b, _, nf, h, w = latent.shape
        # 1. undo the latent normalisation (written as the reference does: z / (1/std) + mean)
        z = latent.to(self.device, self.dtype)
        z = z / (1.0 / self.latent_std.to(z)).view(1, -1, 1, 1, 1) + self.latent_mean.to(z).view(1, -1, 1, 1, 1)
        z = self.conv2(z)  # 1x1x1, cheap at latent resolution
        out_dev = torch.device(output_device) if output_device is not None else self.device
        out = torch.zeros(b, 3, 1 + 4 * (nf - 1), 16 * h, 16 * w, dtype=torch.float32, device=out_dev)
        if tile is None or (tile[0] >= h and tile[1] >= w):
            # 2a. whole frames, one latent frame at a time
            state: dict = {}
            for i in range(nf):
                interrupt.check("decoding the video")
                x = self.decoder.trunk(z[:, :, i : i + 1], state)
                x = self.decoder.upsampler(x, state, first_chunk=i == 0)
                out[:, :, _frame_slice(i)] = _unpatchify(x).to(out_dev, torch.float32)
                if progress is not None:
                    progress(i + 1, nf)
        else:
            self._decode_tiled(z, out, tile, tile_overlap, progress)
        return out.clamp_(-1.0, 1.0) if clamp else out

    def _decode_tiled(self, z: torch.Tensor, out: torch.Tensor, tile, overlap: int, progress) -> None:
        b, _, nf, h, w = z.shape
        th, tw = min(int(tile[0]), h), min(int(tile[1]), w)
        if th < 1 or tw < 1:
            raise OviInputError(f"tile must be two positive sizes in latent pixels, got {tile}")
        if overlap < 0 or (overlap >= th and th < h) or (overlap >= tw and tw < w):
            raise OviInputError(
                f"tile_overlap={overlap} must be >= 0 and smaller than the tile {tuple(tile)} (latent pixels); "
                f"use tiles of at least {overlap + 8} latent pixels or a smaller overlap"
            )
        # 2b. the trunk (with its frame-wide attention) on whole frames, kept at latent resolution
        state: dict = {}
        trunk = None
        for i in range(nf):
            interrupt.check("decoding the video")
            x = self.decoder.trunk(z[:, :, i : i + 1], state)  # [B, C, 1, h, w]
            if trunk is None:
                trunk = x.new_empty(x.shape[:2] + (nf,) + x.shape[3:])
            trunk[:, :, i : i + 1] = x
        del state
        # 3. the upsampler tile by tile, each tile over all frames with its own causal memory
        weight = torch.zeros(1, 1, 1, 16 * h, 16 * w, dtype=torch.float32, device=out.device)
        tiles = [(y0, x0) for y0 in _tile_starts(h, th, overlap) for x0 in _tile_starts(w, tw, overlap)]
        for n, (y0, x0) in enumerate(tiles):
            mask = _blend_mask(y0, th, h, x0, tw, w, overlap, out.device)  # [16th, 16tw]
            ys, xs = slice(16 * y0, 16 * (y0 + th)), slice(16 * x0, 16 * (x0 + tw))
            state = {}
            for i in range(nf):
                interrupt.check("decoding the video")
                x = self.decoder.upsampler(trunk[:, :, i : i + 1, y0 : y0 + th, x0 : x0 + tw], state, i == 0)
                out[:, :, _frame_slice(i), ys, xs] += _unpatchify(x).to(out.device, torch.float32) * mask
                if progress is not None:
                    progress(n * nf + i + 1, len(tiles) * nf)
            weight[..., ys, xs] += mask
        out /= weight

    # -- encode -------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [B, 3, 1+4k, H, W] in [-1, 1] (H, W multiples of 16) -> normalised latent [B, 48, 1+k, H/16, W/16].

        Returns the posterior mean (no sampling), as Ovi does for the image-to-video first frame."""
        if self.encoder is None:
            raise WrongFileError(
                "this video VAE was loaded without encoder weights (no `encoder.*` keys in the file), so it cannot "
                "encode images; load the complete Wan2.2_VAE.pth or ComfyUI's wan2.2_vae.safetensors"
            )
        self._check_frames(frames)
        x = _patchify(frames.to(self.device, self.dtype))
        state: dict = {}
        chunks = [x[:, :, :1]] + [x[:, :, i : i + 4] for i in range(1, x.shape[2], 4)]  # frame 0, then 4 at a time
        encoded = []
        for c in chunks:
            interrupt.check("encoding the image")
            encoded.append(self.encoder(c, state))
        h = torch.cat(encoded, dim=2)
        mu = self.conv1(h)[:, : self.cfg.z_dim]  # the log-variance half is not needed
        mean = self.latent_mean.to(mu).view(1, -1, 1, 1, 1)
        return ((mu - mean) * (1.0 / self.latent_std.to(mu)).view(1, -1, 1, 1, 1)).float()

    # -- input checks -------------------------------------------------------------------------------------

    def _check_latent(self, latent: torch.Tensor) -> None:
        if not isinstance(latent, torch.Tensor) or latent.dim() != 5:
            shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise OviInputError(
                f"video latent must be a 5-D tensor [batch, {self.cfg.z_dim}, frames, height, width]; got {shape}"
            )
        c = latent.shape[1]
        if c != self.cfg.z_dim:
            hint = (
                " A 16-channel latent comes from a Wan2.1 model/VAE; Ovi uses the 48-channel Wan2.2 latent space."
                if c == 16
                else ""
            )
            raise OviInputError(
                f"video latent has {c} channels but the Wan2.2 VAE decodes {self.cfg.z_dim}-channel latents "
                f"(shape {tuple(latent.shape)}).{hint}"
            )
        if min(latent.shape[2:]) < 1:
            raise OviInputError(f"video latent is empty: shape {tuple(latent.shape)}")
        if not torch.isfinite(latent).all():
            raise OviInputError(
                f"video latent contains {int((~torch.isfinite(latent)).sum())} NaN/inf values; the sampling run "
                "diverged (try float32/bfloat16 instead of float16, fewer steps with a lower guidance scale, or another seed)"
            )

    def _check_frames(self, frames: torch.Tensor) -> None:
        if not isinstance(frames, torch.Tensor) or frames.dim() != 5 or frames.shape[1] != 3:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise OviInputError(f"frames to encode must be [batch, 3, frames, height, width]; got {shape}")
        _, _, t, hh, ww = frames.shape
        if (t - 1) % 4 or hh % 16 or ww % 16 or min(t, hh, ww) < 1:
            raise OviInputError(
                f"frames to encode must number 1+4k with height and width multiples of 16; got {t} frames of {hh}x{ww}"
            )
        if not torch.isfinite(frames).all():
            raise OviInputError("frames to encode contain NaN/inf values")


def _frame_slice(i: int) -> slice:
    """Output frames produced by latent frame i: the first gives 1 frame, every later one 4."""
    return slice(0, 1) if i == 0 else slice(1 + 4 * (i - 1), 1 + 4 * i)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def _ramp(start: int, tile: int, size: int, overlap: int) -> torch.Tensor:
    """1-D blend weights (output pixels) of one tile.

    On a side with a neighbouring tile, the outer `context` latent pixels get weight 0 (they were decoded without
    their full surroundings; the decoder's receptive field is ~13 latent pixels and the error near a cut falls
    ~3.5x per pixel), then the weight rises linearly over `fade` pixels. With overlap = 2*context + fade the
    neighbour's ramp is the mirror image, so the weights of the two tiles sum to 1 across the seam."""
    fade = max(1, overlap // 4)
    context = max(0, (overlap - fade) // 2)
    k = torch.arange(16 * tile, dtype=torch.float32)
    rise = ((k - 16 * context + 0.5) / (16 * fade)).clamp(0.0, 1.0)
    wgt = torch.ones(16 * tile)
    if start > 0:
        wgt = torch.minimum(wgt, rise)
    if start + tile < size:
        wgt = torch.minimum(wgt, rise.flip(0))
    return wgt


def _blend_mask(y0, th, h, x0, tw, w, overlap, device) -> torch.Tensor:
    return (_ramp(y0, th, h, overlap)[:, None] * _ramp(x0, tw, w, overlap)[None, :]).to(device)


# ----------------------------------------------------------------------------------------------------------
# Files


def video_vae_from_state_dict(
    sd: dict, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, source: str = "state dict"
) -> WanVideoVAE:
    """Build a WanVideoVAE from original-Wan / ComfyUI key names (decoder-only dicts are accepted)."""
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    found = filekinds.identify(sd)  # what the file is (Wan2.1's 16-channel VAE too): the file-kind table
    if found.kind.part != "video_vae":
        raise WrongFileError(f"{filekinds.wrong_part_message(found, 'video_vae', source)}. Ovi needs `Wan2.2_VAE.pth` "
                             "from Wan-AI/Wan2.2-TI2V-5B or ComfyUI's `wan2.2_vae.safetensors`.")
    if found.prefix:  # e.g. `first_stage_model.`, `vae.`
        sd = filekinds.strip_prefix(sd, found.prefix)
    try:
        cfg = WanVAEConfig.from_state_dict(sd)
    except KeyError as exc:
        raise WrongFileError(f"{source} is missing the Wan2.2 VAE tensor {exc.args[0]}; the file is incomplete or "
                             "from another model") from None
    with_encoder = "encoder.conv1.weight" in sd
    with torch.device("meta"):
        model = WanVideoVAE(cfg, with_encoder=with_encoder)
    wanted = set(model.state_dict())
    missing = sorted(wanted - set(sd))
    if missing:
        raise WrongFileError(
            f"{source} is missing {len(missing)} Wan2.2 VAE tensors (e.g. {missing[0]}); the file is incomplete "
            "or from another model"
        )
    unused = [k for k in sd if k not in wanted]
    if unused:
        logger.info("video VAE: ignoring %d extra tensors (e.g. %s)", len(unused), unused[0])
    try:
        model.load_state_dict({k: sd[k].to(dtype) for k in wanted}, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatch
        raise WrongFileError(f"{source} does not match the Wan2.2 VAE layout: {str(exc)[:300]}") from exc
    model.latent_mean = torch.tensor(WAN22_LATENT_MEAN, dtype=dtype)
    model.latent_std = torch.tensor(WAN22_LATENT_STD, dtype=dtype)
    return model.to(device).eval().requires_grad_(False)


def load_video_vae(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> WanVideoVAE:
    """Load `Wan2.2_VAE.pth` (original) or `wan2.2_vae.safetensors` (ComfyUI); both use the same key names."""
    sd = read_checkpoint(path, "video VAE")
    return video_vae_from_state_dict(sd, device=device, dtype=dtype, source=Path(path).name)


# ----------------------------------------------------------------------------------------------------------
# Demo model


def _init_like_golden(model: nn.Module, seed: int) -> None:
    """Deterministic random weights: conv N/sqrt(fan_in), bias 0.02 N, norm gamma 1 + 0.1 N."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g)
            if name.endswith("gamma"):
                p.copy_(1 + 0.1 * n)
            elif name.endswith("bias"):
                p.copy_(0.02 * n)
            else:
                p.copy_(n / math.sqrt(p[0].numel()))


def build_demo_video_vae(
    seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> WanVideoVAE:
    """A tiny Wan2.2-shaped VAE (widths 8) with deterministic random weights, built without any file."""
    model = WanVideoVAE(WanVAEConfig.tiny(), with_encoder=True)
    _init_like_golden(model, seed)
    return model.to(device, dtype).eval().requires_grad_(False)
