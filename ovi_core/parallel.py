"""Ulysses sequence parallel for the fusion model, on torch.distributed.

The idea follows DeepSpeed-Ulysses (as used by character-ai/Ovi, Apache-2.0, and xDiT/yunchang); the code is ours.
Each rank of a process group of size N holds a contiguous slice of the video tokens and of the audio tokens (the
first L % N ranks one token more: uneven splits, no padding, no key mask). Everything per token (projections,
norms, modulation, RoPE rows, FFN, heads) runs on the local slice. An attention that needs the whole sequence
exchanges heads for tokens with one all-to-all per tensor:

    q, k, v  [B, L/N, H, D]  --all-to-all-->  [B, L, H/N, D]   (scatter heads, gather the sequence)
    attention per head group on the full sequences
    out      [B, L, H/N, D]  --all-to-all-->  [B, L/N, H, D]   (and back)

so 4 all-to-alls per attention: self-attention of each tower, and both directions of the video<->audio fusion
attention (queries split like their tower, keys/values like the other tower). The text cross-attention needs none:
the text keys/values are whole on every rank and only the query sequence is split. The uneven splits are
``all_to_all_single`` with split sizes (supported by gloo and NCCL). The number of heads must divide by N.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.distributed as dist

from ovi_core.attention import attention
from ovi_core.errors import OviInputError

Attend = Callable[..., torch.Tensor]  # (q, k, v, backend) -> out, q/k/v [B, L, H, D] as attention() takes them


class Attends(NamedTuple):
    """The four whole-sequence attentions of a fused block: (query tower, key/value tower)."""

    video: Attend
    audio: Attend
    audio_video: Attend  # audio queries, video keys/values (the audio tower's fusion term)
    video_audio: Attend  # video queries, audio keys/values


LOCAL = Attends(attention, attention, attention, attention)  # one process: plain attention, unchanged


def split_sizes(length: int, size: int) -> tuple[int, ...]:
    """Tokens per rank: contiguous, the first length % size ranks one more (as torch.tensor_split)."""
    base, extra = divmod(length, size)
    return tuple(base + (r < extra) for r in range(size))


class SequenceParallel:
    """A process group the fusion model splits its token sequences over (see the module docstring)."""

    def __init__(self, group=None):
        if not dist.is_available() or not dist.is_initialized():
            raise OviInputError("sequence parallel needs torch.distributed initialised (launch with torchrun, or call "
                                "torch.distributed.init_process_group first)")
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def check_heads(self, num_heads: int) -> None:
        if num_heads % self.size:
            raise OviInputError(f"sequence parallel over {self.size} ranks needs a head count divisible by "
                                f"{self.size}; the model has {num_heads} heads (Ovi: 24, so 2, 3, 4, 6, 8, 12 or 24 "
                                "ranks)")

    # ---- splitting -------------------------------------------------------------------------------------------
    def sizes(self, length: int) -> tuple[int, ...]:
        return split_sizes(length, self.size)

    def start(self, sizes: tuple[int, ...]) -> int:
        """This rank's first token."""
        return sum(sizes[: self.rank])

    def local(self, sizes: tuple[int, ...]) -> slice:
        start = self.start(sizes)
        return slice(start, start + sizes[self.rank])

    def shard(self, x: torch.Tensor, sizes: tuple[int, ...], dim: int = 1) -> torch.Tensor:
        """This rank's tokens of x (a contiguous copy)."""
        s = self.local(sizes)
        return x.narrow(dim, s.start, s.stop - s.start).contiguous()

    # ---- communication ---------------------------------------------------------------------------------------
    def _all_to_all(self, out: torch.Tensor, inp: torch.Tensor, out_sizes, in_sizes) -> torch.Tensor:
        dist.all_to_all_single(out, inp, output_split_sizes=list(out_sizes), input_split_sizes=list(in_sizes),
                               group=self.group)
        return out

    def seq_to_heads(self, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        """[B, L_r, H, D] (this rank's tokens, every head) -> [B, L, H/N, D] (every token, this rank's heads)."""
        n = self.size
        b, lr, h, d = x.shape
        send = x.reshape(b, lr, n, h // n, d).permute(2, 1, 0, 3, 4).reshape(n * lr, b, h // n, d)  # by destination
        recv = x.new_empty(sum(sizes), b, h // n, d)  # [L, B, H/N, D]: the senders' token slices in rank order
        return self._all_to_all(recv, send, sizes, [lr] * n).permute(1, 0, 2, 3)

    def heads_to_seq(self, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        """[B, L, H/N, D] -> [B, L_r, H, D] (the inverse of seq_to_heads)."""
        n, lr = self.size, sizes[self.rank]
        b, _, hn, d = x.shape
        send = x.permute(1, 0, 2, 3).contiguous()  # [L, B, H/N, D]: token slices by destination
        recv = x.new_empty(n * lr, b, hn, d)  # from rank i: head group i of this rank's tokens
        self._all_to_all(recv, send, [lr] * n, sizes)
        return recv.reshape(n, lr, b, hn, d).permute(2, 1, 0, 3, 4).reshape(b, lr, n * hn, d)

    def gather(self, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        """[B, L_r, C] on every rank -> the whole [B, L, C] on every rank."""
        n, lr = self.size, x.shape[1]
        send = x.transpose(0, 1).unsqueeze(0).expand(n, -1, -1, -1).reshape(n * lr, x.shape[0], *x.shape[2:])
        recv = x.new_empty(sum(sizes), x.shape[0], *x.shape[2:])
        return self._all_to_all(recv, send, sizes, [lr] * n).transpose(0, 1).contiguous()

    def attention(self, q, k, v, backend: str, q_sizes, kv_sizes) -> torch.Tensor:
        """Whole-sequence attention of this rank's queries [B, L_r, H, D] over keys/values split by kv_sizes."""
        q, k, v = self.seq_to_heads(q, q_sizes), self.seq_to_heads(k, kv_sizes), self.seq_to_heads(v, kv_sizes)
        if backend != "sdpa" and q.shape[0] > 1:  # [B, L, H/N, D] views of [L, B, H/N, D]: flash/sage want them dense
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = attention(q, k, v, backend)  # [B, Lq, H/N, D]
        return self.heads_to_seq(out, q_sizes)

    def attends(self, video_sizes, audio_sizes) -> Attends:
        def bind(q_sizes, kv_sizes) -> Attend:
            return lambda q, k, v, backend: self.attention(q, k, v, backend, q_sizes, kv_sizes)

        return Attends(bind(video_sizes, video_sizes), bind(audio_sizes, audio_sizes),
                       bind(audio_sizes, video_sizes), bind(video_sizes, audio_sizes))


# ---- launching -------------------------------------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_torchrun(device_type: str) -> tuple[int, int, int]:
    """Initialise the default process group from torchrun's environment (gloo on the CPU, nccl on CUDA) if it is
    not yet; returns (rank, world size, local rank)."""
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process(group=None) -> bool:
    """Rank 0 of the group (or of the world), or no distributed run at all."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank(group) == 0


__all__ = ["Attends", "LOCAL", "SequenceParallel", "init_from_torchrun", "is_main_process", "launched_by_torchrun",
           "split_sizes"]
