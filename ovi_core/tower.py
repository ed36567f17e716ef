"""One DiT tower of Ovi (video or audio): embeddings, blocks' layers, head.

Follows character-ai/Ovi and Wan2.2 (Apache-2.0), ovi/modules/model.py and fusion.py. Module names equal
the released checkpoint keys (``blocks.N.cross_attn.k_fusion`` ...), so the official files load with
strict=True and no renaming; the fusion layers are declared here, in the cross-attention, not injected.
The fused forward that runs a video block and an audio block together is in ovi_core/fusion.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ovi_core.attention import attention
from ovi_core.config import TowerConfig
from ovi_core.layers import GELU, ConvMLP, resolve_operations
from ovi_core.rope import RopeTable, apply_rope


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float, operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = ops.Linear(dim, dim), ops.Linear(dim, dim), ops.Linear(dim, dim), ops.Linear(dim, dim)
        self.norm_q = ops.RMSNorm(dim, eps)
        self.norm_k = ops.RMSNorm(dim, eps)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, dim] -> [B, L, H, D] in the compute dtype."""
        return x.to(self.q.compute_dtype).unflatten(2, (self.num_heads, self.head_dim))

    def rotated_heads(self, x: torch.Tensor, rope: RopeTable) -> torch.Tensor:
        """Normalised q or k [B, L, dim] (a fresh tensor) -> rotated [B, L, H, D] in the compute dtype; the rotation
        runs in place, in float32 (before the cast)."""
        return apply_rope(x.unflatten(2, (self.num_heads, self.head_dim)), rope, inplace=True).to(self.q.compute_dtype)

    def forward(self, x: torch.Tensor, rope: RopeTable, backend: str, attend=attention) -> torch.Tensor:
        """attend: attention() or, under sequence parallel, its whole-sequence version (ovi_core.parallel)."""
        q = self.rotated_heads(self.norm_q(self.q(x)), rope)  # [B, L, H, D]
        k = self.rotated_heads(self.norm_k(self.k(x)), rope)
        v = self.heads(self.v(x))
        return self.o(attend(q, k, v, backend).flatten(2))


class FusionCrossAttention(SelfAttention):
    """Text cross-attention plus the attention to the other modality (Ovi's fusion).

    The text branch reuses q un-rotated; the fusion branch rotates q with this tower's positions and the
    other tower's keys with theirs, so their product depends on relative audio-video time. Both branches
    share q and o; their outputs are summed before o.
    """

    def __init__(self, dim: int, num_heads: int, eps: float, operations=None):
        super().__init__(dim, num_heads, eps, operations)
        ops = resolve_operations(operations)
        self.k_fusion = ops.Linear(dim, dim)
        self.v_fusion = ops.Linear(dim, dim)
        self.pre_attn_norm_fusion = ops.LayerNorm(dim, eps, elementwise_affine=True)
        self.norm_k_fusion = ops.RMSNorm(dim, eps)

    def text_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the embedded text [B, 512, dim] -> 2 x [B, 512, H, D] (cacheable per generation)."""
        return self.heads(self.norm_k(self.k(context))), self.heads(self.v(context))

    def other_kv(self, other: torch.Tensor, other_rope: RopeTable) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (rotated with the other tower's positions) and values of the other tower's stream [B, L', dim]."""
        other = self.pre_attn_norm_fusion(other)
        return self.rotated_heads(self.norm_k_fusion(self.k_fusion(other)), other_rope), self.heads(self.v_fusion(other))

    def forward(
        self,
        x: torch.Tensor,  # [B, L, dim], already norm3-ed
        text_kv: tuple[torch.Tensor, torch.Tensor],
        other_kv: tuple[torch.Tensor, torch.Tensor] | None,  # from other_kv(); None: no fusion term (a cut)
        rope: RopeTable,
        backend: str,
        attend=attention,  # the fusion term's attention (sequence parallel: over the other tower's whole sequence)
    ) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(2, (self.num_heads, self.head_dim))  # [B, L, H, D]
        # text: no RoPE, no key mask (padding included); the text keys/values are whole on every rank
        out = attention(q.to(self.q.compute_dtype), *text_kv, backend)
        if other_kv is not None:
            q = apply_rope(q, rope, inplace=True).to(self.q.compute_dtype)  # q is not needed un-rotated any more
            out = out.add_(attend(q, *other_kv, backend))
        return self.o(out.flatten(2))


class ModulationAdd(nn.Module):
    """Holds a block's [1, n, dim] modulation; named so the key is ``blocks.N.modulation.modulation``."""

    def __init__(self, dim: int, n: int):
        super().__init__()
        self.modulation = nn.Parameter(torch.zeros(1, n, dim))


class TowerBlock(nn.Module):
    """The layers of one block of one tower. norm1/norm2/head.norm have no parameters; norm3 is affine."""

    def __init__(self, cfg: TowerConfig, operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        dim = cfg.dim
        self.norm1 = ops.LayerNorm(dim, cfg.eps)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.eps, ops)
        self.norm3 = ops.LayerNorm(dim, cfg.eps, elementwise_affine=True)
        self.cross_attn = FusionCrossAttention(dim, cfg.num_heads, cfg.eps, ops)
        self.norm2 = ops.LayerNorm(dim, cfg.eps)
        self.ffn = nn.Sequential(ops.Linear(dim, cfg.ffn_dim), GELU(), ops.Linear(cfg.ffn_dim, dim))
        self.modulation = ModulationAdd(dim, 6)


class Head(nn.Module):
    def __init__(self, cfg: TowerConfig, operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))
        self.norm = ops.LayerNorm(cfg.dim, cfg.eps)
        self.head = ops.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] timesteps -> [N, dim] = [cos(t f), sin(t f)], f = 10000^(-k/(dim/2)); float64 as the reference."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = torch.outer(t.to(torch.float64), freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class WanTower(nn.Module):
    def __init__(self, cfg: TowerConfig, operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        self.cfg = cfg
        dim = cfg.dim
        if cfg.kind == "video":
            self.patch_embedding = ops.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        else:
            self.patch_embedding = nn.Sequential(
                ops.ChannelLastConv1d(cfg.in_dim, dim, kernel_size=7, padding=3),
                nn.SiLU(inplace=True),
                ConvMLP(dim, cfg.audio_mlp_hidden, kernel_size=7, padding=3, operations=ops),
            )
        self.text_embedding = nn.Sequential(ops.Linear(cfg.text_dim, dim), GELU(), ops.Linear(dim, dim))
        self.time_embedding = nn.Sequential(ops.Linear(cfg.freq_dim, dim), nn.SiLU(), ops.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(TowerBlock(cfg, ops) for _ in range(cfg.num_layers))
        self.head = Head(cfg, ops)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Latent -> float32 tokens [B, L, dim] and the token grid ((F, H/2, W/2) for video, (L,) for audio)."""
        if self.cfg.kind == "video":
            if hasattr(self.patch_embedding, "patch_tokens"):  # ours: a reshape + one matmul
                y, grid = self.patch_embedding.patch_tokens(x)  # [B, L, dim]
                return y.float(), grid
            y = self.patch_embedding(x)  # a caller's Conv3d: [B, dim, F, H/2, W/2]
            return y.flatten(2).transpose(1, 2).float(), tuple(y.shape[2:])
        return self.patch_embedding(x).float(), (x.shape[1],)  # [B, L, 20] -> [B, L, dim]

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps [B, U] -> e [B, U, dim] and e0 [B, U, 6, dim], float32."""
        b, u = t.shape
        sin = sinusoidal_embedding(t.flatten(), self.cfg.freq_dim).float()
        e = self.time_embedding(sin).float().unflatten(0, (b, u))  # [B, U, dim]
        e0 = self.time_projection(e).float().unflatten(2, (6, self.cfg.dim))  # [B, U, 6, dim]
        return e, e0

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """T5 states zero-padded to [B, 512, 4096] -> [B, 512, dim] (padding rows are embedded, not masked)."""
        return self.text_embedding(context)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Head output [B, L, out*prod(patch)] -> video [B, C, F, H, W] or audio [B, L, C]."""
        if self.cfg.kind == "audio":
            return x
        f, h, w = grid
        pt, ph, pw = self.cfg.patch_size
        c = self.cfg.out_dim
        x = x.reshape(x.shape[0], f, h, w, pt, ph, pw, c)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(x.shape[0], c, f * pt, h * ph, w * pw)
