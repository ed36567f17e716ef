"""Ovi's fusion model: two identical DiT towers run block by block with bidirectional cross-modal attention.

Follows character-ai/Ovi (Apache-2.0), ovi/modules/fusion.py. Order inside fused block i:
  1. audio self-attention, 2. video self-attention,
  3. audio cross step (text + attention to the video stream after its self-attention) and audio FFN,
  4. video cross step (text + attention to the audio stream after its self-attention, before its cross
     step) and video FFN.
The residual streams stay in float32 whatever the compute dtype and are updated in place; matmuls run in the
compute dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ovi_core import interrupt
from ovi_core.attention import resolve_backend
from ovi_core.config import FusionConfig
from ovi_core.errors import OviInputError
from ovi_core.layers import ComputeDtype, resolve_operations
from ovi_core.parallel import LOCAL, Attends, SequenceParallel
from ovi_core.rope import RopeTable, audio_rope, video_rope
from ovi_core.tower import TowerBlock, WanTower


@dataclass
class TextContext:
    """Per-generation text state: every block's cross-attention text keys/values for both towers.

    Computed once by OviFusion.prepare_text and reused at every step (the reference recomputes them).
    """

    video_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per block, 2 x [B, 512, H, D]
    audio_kv: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def batch(self) -> int:
        return self.video_kv[0][0].shape[0]

    def rows(self, index: torch.Tensor | slice) -> TextContext:
        """The context of some batch rows."""
        pick = lambda kv: [(k[index], v[index]) for k, v in kv]  # noqa: E731
        return TextContext(pick(self.video_kv), pick(self.audio_kv))


class _Modulation:
    """A tower's per-token modulation without materialising [B, L, 6, dim] vectors.

    Timesteps take at most two values per row: t, and 0 on the clean first-frame tokens of image-to-video, which
    are a prefix of the video sequence. So the time embedding is computed per distinct value (U = 1 or 2) and the
    modulation is applied per token segment, never expanded to every token.
    """

    def __init__(self, e: torch.Tensor, e0: torch.Tensor, clean_tokens: int = 0, segmented: bool = False):
        self.e, self.e0 = e, e0  # [B, U, dim], [B, U, 6, dim]; u = 0: t, u = 1: t = 0 (clean prefix)
        self.clean_tokens = clean_tokens
        # every row the same vectors (the sampler's positive/negative rows share t): norms can fold them in;
        # segmented: never (a sequence-parallel slice of a sequence with a clean prefix rounds as the whole one)
        self.segmented = segmented
        self.uniform = not segmented and (e.shape[0] == 1 or (not e.is_meta and torch.equal(e, e[:1].expand_as(e))
                                                              and torch.equal(e0, e0[:1].expand_as(e0))))

    def rows(self, index: torch.Tensor | slice) -> _Modulation:
        return _Modulation(self.e[index], self.e0[index], self.clean_tokens, self.segmented)

    def shard(self, start: int) -> _Modulation:
        """The modulation of a token slice starting at `start` (sequence parallel): the clean prefix moves with it.
        A slice past the clean prefix keeps the per-segment arithmetic of the whole sequence (same rounding)."""
        return _Modulation(self.e, self.e0, max(0, self.clean_tokens - start), self.segmented or self.clean_tokens > 0)

    def block(self, block: TowerBlock) -> _Vectors:
        """shift1, scale1, gate1, shift2, scale2, gate2 of one block (its parameter + the time projection)."""
        table = block.modulation.modulation.to(self.e0.device, torch.float32)  # may live elsewhere (lowvram)
        return _Vectors(table.unsqueeze(0) + self.e0, self.clean_tokens, self.uniform)

    def head(self, head_modulation: torch.Tensor) -> _Vectors:
        """shift, scale of the head (its parameter + the time embedding e, not e0)."""
        table = head_modulation.to(self.e.device, torch.float32)
        return _Vectors(table.unsqueeze(0) + self.e.unsqueeze(2), self.clean_tokens, self.uniform)


class _Vectors:
    """Modulation vectors [B, U, n, dim] applied to float32 token streams [B, L, dim], segment by segment, in place."""

    def __init__(self, mod: torch.Tensor, clean_tokens: int, uniform: bool = False):
        self.mod = mod
        self.uniform = uniform and clean_tokens == 0
        # (tokens, u): the clean prefix takes u = 1, the rest u = 0
        self.segments = [(slice(None), 0)] if clean_tokens == 0 else [(slice(0, clean_tokens), 1),
                                                                        (slice(clean_tokens, None), 0)]

    def _v(self, u: int, k: int) -> torch.Tensor:  # [B, 1, dim]
        return self.mod[:, u : u + 1, k]

    def affine(self, norm: nn.Module, x: torch.Tensor, shift: int, scale: int) -> torch.Tensor:
        """norm(x) * (1 + scale) + shift, a new float32 tensor (x is left alone).

        A parameter-free LayerNorm with the same vectors for every row and token takes them as its affine weight and
        bias: one pass over x. Otherwise the modulation is applied in place on norm(x)."""
        if self.uniform and isinstance(norm, nn.LayerNorm) and norm.weight is None and norm.bias is None:
            scale_1p = 1 + self.mod[0, 0, scale]  # [dim]
            return F.layer_norm(x.float(), norm.normalized_shape, scale_1p, self.mod[0, 0, shift], norm.eps)
        y = norm(x).float()
        for s, u in self.segments:
            y[:, s].mul_(1 + self._v(u, scale)).add_(self._v(u, shift))
        return y

    def gated_(self, residual: torch.Tensor, y: torch.Tensor, gate: int) -> torch.Tensor:
        """residual += gate * y, in place (residual is a float32 stream, y any float dtype)."""
        for s, u in self.segments:
            residual[:, s].addcmul_(self._v(u, gate), y[:, s])
        return residual


def _rope_rows(table: RopeTable, rows: slice) -> RopeTable:
    """The RoPE rows of some tokens (views)."""
    return RopeTable(table.cos[rows], table.sin[rows], None if table.cis is None else table.cis[rows])


def _rows(run: torch.Tensor) -> torch.Tensor | slice:
    """Row indices [k] (on the CPU) as a slice when they are consecutive: views instead of copies."""
    if run.numel() and bool((run == torch.arange(int(run[0]), int(run[0]) + run.numel())).all()):
        return slice(int(run[0]), int(run[0]) + run.numel())
    return run


# fusion_cut values: which fusion attention terms a forward leaves out (the guidance pass of sync guidance).
# "audio_to_video": the video tower does not attend to the audio stream; "video_to_audio": the audio tower does not
# attend to the video stream; "both": neither (the towers run independently).
FUSION_CUTS = ("none", "both", "audio_to_video", "video_to_audio")


class OviFusion(nn.Module):
    """The fused video/audio model.

    operations: None (our layers, ovi_core.layers) or a namespace of layer classes — Linear, Conv1d, Conv3d,
      LayerNorm, RMSNorm, constructed with torch's arguments — such as ComfyUI's comfy.ops.manual_cast; see
      ovi_core.layers.resolve_operations. Module names (checkpoint keys) are the same either way.
    """

    def __init__(self, cfg: FusionConfig | None = None, operations=None):
        super().__init__()
        self.cfg = cfg or FusionConfig.full()
        self.operations = resolve_operations(operations)
        self.video_model = WanTower(self.cfg.video, self.operations)
        self.audio_model = WanTower(self.cfg.audio, self.operations)
        self.attention_backend = "sdpa"
        self.compute_dtype = torch.float32
        self.ffn_chunk = 0  # >0: run the FFNs over this many tokens at a time (lower peak memory, same numbers)
        self._swap: tuple[int, torch.device, torch.device] | None = None  # (blocks, compute, offload device)
        self._rope_cache: dict = {}
        self.sequence_parallel: SequenceParallel | None = None  # see set_sequence_parallel

    # ---- settings -------------------------------------------------------------------------------------
    def set_compute_dtype(self, dtype: torch.dtype) -> OviFusion:
        """Matmul dtype (float32, bfloat16, float16); weights are cast layer by layer when they differ."""
        self.compute_dtype = dtype
        for m in self.modules():
            if isinstance(m, ComputeDtype):
                m.compute_dtype = dtype
        return self

    def set_attention_backend(self, name: str) -> OviFusion:
        self.attention_backend = resolve_backend(name, self.device)
        return self

    def enable_block_swap(self, num_blocks: int, compute_device, offload_device="cpu") -> OviFusion:
        """Keep the first `num_blocks` fused blocks on `offload_device` and move each one to the compute device
        only while it runs; everything else lives on the compute device. 0 turns swapping off."""
        compute_device, offload_device = torch.device(compute_device), torch.device(offload_device)
        num_blocks = max(0, min(int(num_blocks), self.cfg.num_layers))
        self.to(compute_device)
        for i in range(num_blocks):
            self.video_model.blocks[i].to(offload_device)
            self.audio_model.blocks[i].to(offload_device)
        self._swap = (num_blocks, compute_device, offload_device) if num_blocks else None
        return self

    def set_sequence_parallel(self, group=None, enabled: bool = True) -> OviFusion:
        """Split every forward's token sequences over the ranks of a torch.distributed process group (None: the
        default group); see ovi_core.parallel. Every rank calls forward with the same inputs and gets the whole
        output. The head count must divide by the group size. enabled=False: one process again."""
        if not enabled:
            self.sequence_parallel = None
            return self
        sp = SequenceParallel(group)
        sp.check_heads(self.cfg.video.num_heads)
        self.sequence_parallel = sp if sp.size > 1 else None
        return self

    @property
    def device(self) -> torch.device:
        return self.video_model.head.modulation.device

    def _ropes(self, grid_v, grid_a, dev):
        key = (grid_v, grid_a, str(dev))
        if key not in self._rope_cache:
            head_dim = self.cfg.video.head_dim
            self._rope_cache = {key: (  # keep only the latest grid: one generation uses one size
                video_rope(*grid_v, head_dim, device=dev),
                audio_rope(grid_a[0], head_dim, self.cfg.audio.temporal_rope_scale, device=dev),
            )}
        return self._rope_cache[key]

    # ---- text -------------------------------------------------------------------------------------------
    def _pad_context(self, context, batch: int, device: torch.device) -> torch.Tensor:
        """List of [L_i, 4096] or a tensor [B, L, 4096] -> zero-padded [B, 512, 4096] on `device`."""
        text_len, text_dim = self.cfg.video.text_len, self.cfg.video.text_dim
        rows = list(context) if isinstance(context, (list, tuple)) else list(context.unbind(0)) if context.dim() == 3 else [context]
        if len(rows) == 1 and batch > 1:
            rows = rows * batch
        if len(rows) != batch:
            raise OviInputError(f"got {len(rows)} text contexts for a batch of {batch}")
        out = torch.zeros(batch, text_len, text_dim, device=device, dtype=torch.float32)
        for i, r in enumerate(rows):
            if r.dim() != 2 or r.shape[1] != text_dim:
                raise OviInputError(f"a text context must be [tokens, {text_dim}] (umT5-XXL states), got {list(r.shape)}")
            if r.shape[0] > text_len:
                raise OviInputError(f"a text context has {r.shape[0]} rows; Ovi takes at most {text_len} tokens")
            out[i, : r.shape[0]] = r.to(out)
        return out

    @torch.no_grad()
    def prepare_text(self, video_context, audio_context, batch: int | None = None, device=None) -> TextContext:
        """Embed both towers' text and project every block's text keys/values once, on `device` (default: the
        model's)."""
        device = self.device if device is None else torch.device(device)
        if batch is None:
            batch = len(video_context) if isinstance(video_context, (list, tuple)) else (video_context.shape[0] if video_context.dim() == 3 else 1)
        kv = []
        for tower, ctx in ((self.video_model, video_context), (self.audio_model, audio_context)):
            emb = tower.embed_text(self._pad_context(ctx, batch, device))  # [B, 512, dim]
            kv.append([])
            for blk in tower.blocks:
                interrupt.check("the text keys/values")
                kv[-1].append(blk.cross_attn.text_kv(emb))
        return TextContext(video_kv=kv[0], audio_kv=kv[1])

    # ---- forward ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(
        self,
        video: torch.Tensor,  # [B, 48, F, H, W]
        audio: torch.Tensor,  # [B, L, 20]
        t: torch.Tensor | float,  # [B] (int64 for UniPC, float for Euler) or one value
        video_context=None,
        audio_context=None,
        *,
        text: TextContext | None = None,
        first_frame_is_clean: bool = False,
        slg_layer: int = 0,
        skip_mask: torch.Tensor | None = None,  # [B] bool: rows for which block slg_layer is skipped
        audio_t: torch.Tensor | float | None = None,  # [B] or one value: the audio tower's timestep; None = t
        clean_video_frames: int | None = None,  # leading latent frames run clean (t = 0); None: first_frame_is_clean
        clean_audio_steps: int = 0,  # leading audio latent steps run clean (t = 0)
        fusion_cut: str = "none",  # "none" | "both" | "audio_to_video" | "video_to_audio": see FUSION_CUTS
        device=None,  # compute device; default: the video latent's
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted flow velocities (noise - data): video [B, 48, F, H, W], audio [B, L, 20], float32.

        Computes on ``device`` (default ``video.device``), not where the parameters are: a host may keep some of
        them elsewhere (ComfyUI's lowvram partial loading) and move them per use; the modulation tables are moved
        here."""
        video, audio = self._check_latents(video, audio)
        if fusion_cut not in FUSION_CUTS:
            raise OviInputError(f"fusion_cut must be one of {', '.join(FUSION_CUTS)}, got {fusion_cut!r}")
        b = video.shape[0]
        dev = video.device if device is None else torch.device(device)
        if text is None:
            if video_context is None or audio_context is None:
                raise OviInputError("pass video_context and audio_context, or a prepared text=TextContext")
            text = self.prepare_text(video_context, audio_context, batch=b, device=dev)
        if text.batch != b:
            raise OviInputError(f"the text context has batch {text.batch}, the latents {b}")
        backend = self.attention_backend

        # 1. patch embeddings: float32 token streams
        xv, grid_v = self.video_model.embed(video.to(dev))  # [B, Lv, dim], (F, H/2, W/2)
        xa, grid_a = self.audio_model.embed(audio.to(dev))  # [B, La, dim], (La,)

        # 2. time embeddings per modality; a clean prefix (I2V: the first latent frame) takes t = 0 (u = 1)
        t = self._timesteps(t, b, dev, "t")  # [B]
        ta = t if audio_t is None else self._timesteps(audio_t, b, dev, "audio_t")
        frames = int(first_frame_is_clean) if clean_video_frames is None else int(clean_video_frames)
        steps = int(clean_audio_steps)
        if not 0 <= frames <= grid_v[0] or not 0 <= steps <= grid_a[0]:
            raise OviInputError(f"clean prefixes must lie inside the latents: {frames} of {grid_v[0]} video frames, "
                                f"{steps} of {grid_a[0]} audio steps")
        with_zero = lambda x: torch.stack([x, torch.zeros_like(x)], dim=1)  # noqa: E731  [B, 2]: t, 0
        mod_v = _Modulation(*self.video_model.embed_time(with_zero(t) if frames else t[:, None]),
                            frames * grid_v[1] * grid_v[2])
        mod_a = _Modulation(*self.audio_model.embed_time(with_zero(ta) if steps else ta[:, None]), steps)

        # 3. RoPE tables (cached per token grid)
        rope_v, rope_a = self._ropes(grid_v, grid_a, dev)
        cut = (fusion_cut in ("both", "video_to_audio"), fusion_cut in ("both", "audio_to_video"))  # (audio, video)

        # 3b. sequence parallel: this rank keeps its slice of each token sequence, with the RoPE rows and the clean
        #     prefix of its tokens; attention runs over the whole sequences by all-to-all (ovi_core.parallel)
        sp, attend, sizes = self.sequence_parallel, LOCAL, None
        if sp is not None:
            sizes = sp.sizes(xv.shape[1]), sp.sizes(xa.shape[1])
            xv, xa = sp.shard(xv, sizes[0]), sp.shard(xa, sizes[1])  # [B, Lv_r, dim], [B, La_r, dim]
            mod_v, mod_a = mod_v.shard(sp.start(sizes[0])), mod_a.shard(sp.start(sizes[1]))
            rope_v, rope_a = _rope_rows(rope_v, sp.local(sizes[0])), _rope_rows(rope_a, sp.local(sizes[1]))
            attend = sp.attends(*sizes)

        # 4. fused blocks (SLG: block slg_layer skipped, for all rows or only the rows in skip_mask); a stop request
        #    is honoured between blocks (a swapped block is back on its offload device by then)
        for i in range(self.cfg.num_layers):
            interrupt.check("the transformer forward")
            if slg_layer > 0 and i == slg_layer:
                # rows that keep the block (decided on the CPU: a [B] mask, and no device sync in nonzero)
                run = None if skip_mask is None else (~skip_mask.detach().cpu().bool()).nonzero().flatten()
                if run is None or run.numel() == 0:
                    continue
                if run.numel() < b:  # run the block on the other rows only (views when they are consecutive)
                    rows = _rows(run)
                    rows = rows if isinstance(rows, slice) else rows.to(dev)
                    sub_v, sub_a = xv[rows], xa[rows]
                    out_v, out_a = self._run_block(i, sub_v, sub_a, mod_v.rows(rows), mod_a.rows(rows),
                                                   rope_v, rope_a, text.rows(rows), backend, cut, attend)
                    if out_v is not sub_v or not isinstance(rows, slice):  # a slice's views were updated in place
                        xv[rows], xa[rows] = out_v, out_a
                    continue
            xv, xa = self._run_block(i, xv, xa, mod_v, mod_a, rope_v, rope_a, text, backend, cut, attend)

        # 5. heads (sequence parallel: on the local tokens, then gathered so every rank has the whole output)
        if sp is None:
            return self._head(self.video_model, xv, mod_v, grid_v), self._head(self.audio_model, xa, mod_a, grid_a)
        gather_v, gather_a = (lambda x, s=s: sp.gather(x, s) for s in sizes)
        return (self._head(self.video_model, xv, mod_v, grid_v, gather_v),
                self._head(self.audio_model, xa, mod_a, grid_a, gather_a))

    @staticmethod
    def _timesteps(t, b: int, dev: torch.device, name: str) -> torch.Tensor:
        """One value or [B] -> [B] on dev."""
        t = torch.as_tensor(t, device=dev).reshape(-1)
        t = t.expand(b) if t.numel() == 1 else t
        if t.shape[0] != b:
            raise OviInputError(f"{name} has {t.shape[0]} values for a batch of {b}")
        return t

    def _run_block(self, i, *args):
        """Fused block i, visiting the compute device first when it is a swapped block."""
        swapped = self._swap is not None and i < self._swap[0]
        if swapped:
            self.video_model.blocks[i].to(self._swap[1])
            self.audio_model.blocks[i].to(self._swap[1])
        try:
            return self._fused_block(i, *args)
        finally:
            if swapped:
                self.video_model.blocks[i].to(self._swap[2])
                self.audio_model.blocks[i].to(self._swap[2])

    def _fused_block(self, i, xv, xa, mod_v, mod_a, rope_v, rope_a, text: TextContext, backend, cut=(False, False),
                     attend: Attends = LOCAL):
        """Fused block i; updates the float32 streams xv [B, Lv, dim] and xa [B, La, dim] in place and returns them.

        cut = (audio, video): that tower's attention to the other stream (its fusion term) is left out.
        attend: the attentions over whole sequences (one process: plain attention; sequence parallel: all-to-all)."""
        vb: TowerBlock = self.video_model.blocks[i]
        ab: TowerBlock = self.audio_model.blocks[i]
        ea, ev = mod_a.block(ab), mod_v.block(vb)  # vectors 0..5: shift1, scale1, gate1, shift2, scale2, gate2

        # 1-2. audio then video self-attention (gated residuals)
        ea.gated_(xa, ab.self_attn(ea.affine(ab.norm1, xa, 0, 1), rope_a, backend, attend.audio), 2)
        ev.gated_(xv, vb.self_attn(ev.affine(vb.norm1, xv, 0, 1), rope_v, backend, attend.video), 2)

        # each tower attends to the other's stream after self-attention: their fusion keys/values, taken now
        video_for_audio = None if cut[0] else ab.cross_attn.other_kv(xv, rope_v)  # 2 x [B, Lv, H, D]
        audio_for_video = None if cut[1] else vb.cross_attn.other_kv(xa, rope_a)  # 2 x [B, La, H, D]

        # 3. audio cross step (text + video), then FFN
        xa.add_(ab.cross_attn(ab.norm3(xa), text.audio_kv[i], video_for_audio, rope_a, backend, attend.audio_video))
        del video_for_audio
        ea.gated_(xa, self._ffn(ab, ea.affine(ab.norm2, xa, 3, 4)), 5)

        # 4. video cross step (text + audio after its self-attention), then FFN
        xv.add_(vb.cross_attn(vb.norm3(xv), text.video_kv[i], audio_for_video, rope_v, backend, attend.video_audio))
        ev.gated_(xv, self._ffn(vb, ev.affine(vb.norm2, xv, 3, 4)), 5)
        return xv, xa

    def _ffn(self, block: TowerBlock, x: torch.Tensor) -> torch.Tensor:
        """The block's FFN (output in the compute dtype); in token chunks when ffn_chunk is set (the [L, ffn_dim]
        hidden state is the largest activation of a step)."""
        n = self.ffn_chunk
        if n <= 0 or x.shape[1] <= n:
            return block.ffn(x)
        return torch.cat([block.ffn(c) for c in x.split(n, dim=1)], dim=1)

    @staticmethod
    def _head(tower: WanTower, x: torch.Tensor, mod: _Modulation, grid, gather=None) -> torch.Tensor:
        out = tower.head.head(mod.head(tower.head.modulation).affine(tower.head.norm, x, 0, 1)).float()
        return tower.unpatchify(out if gather is None else gather(out), grid)

    def _check_latents(self, video: torch.Tensor, audio: torch.Tensor):
        cv, ca = self.cfg.video.in_dim, self.cfg.audio.in_dim
        if video.dim() == 4:
            video = video.unsqueeze(0)
        if audio.dim() == 2:
            audio = audio.unsqueeze(0)
        if video.dim() != 5 or video.shape[1] != cv:
            hint = " (a 16-channel latent is Wan2.1/2.2-14B, not the Wan2.2-TI2V-5B latent Ovi uses)" if video.dim() == 5 and video.shape[1] == 16 else ""
            raise OviInputError(f"video latent must be [B, {cv}, F, H, W], got {list(video.shape)}{hint}")
        if audio.dim() != 3 or audio.shape[2] != ca:
            raise OviInputError(f"audio latent must be [B, L, {ca}] (MMAudio 16 kHz latents, channel last), got {list(audio.shape)}")
        _, _, f, h, w = video.shape
        ph, pw = self.cfg.video.patch_size[1:]
        if h % ph or w % pw:
            raise OviInputError(f"video latent height and width must be even (patch {ph}x{pw}), got {h}x{w}")
        if video.shape[0] != audio.shape[0]:
            raise OviInputError(f"video batch {video.shape[0]} != audio batch {audio.shape[0]}")
        return video, audio
