# Sampling loop follows character-ai/Ovi (Apache-2.0), ovi/ovi_fusion_engine.py (OviFusionEngine.generate).
"""Ovi's joint audio+video sampler.

Per step i, with t_i from the schedule (the same for both modalities):
  1. image-to-video: latent frame 0 is overwritten with the clean first-frame latent (its tokens get t = 0),
  2. positive pass: both towers get the prompt embedding,
  3. negative pass: video tower ← video negative prompt, audio tower ← audio negative prompt, and fused block
     ``slg_layer`` skipped (skip-layer guidance lives inside the unconditional branch; there is no third pass),
  4. v = neg + g_v·(pos − neg), a = neg + g_a·(pos − neg),
  5. each modality is stepped by its own scheduler instance.
After the loop the first frame is overwritten once more (image-to-video).

Sync guidance (the lip-sync knob, off by default): with scale s > 0 one more pass per step, the positive prompt with
the video<->audio fusion attention cut (``sync_cut``: "both", "audio_to_video" = the video tower does not see the
audio, "video_to_audio" = the audio tower does not see the video; no SLG), and each modality whose input was cut is
pushed away from it: v = v_guided + s·(v_pos − v_cut). s = 0 runs no extra pass: today's numbers exactly.

Step cache (the speed knob, off by default): with ``cache_threshold`` > 0 a step may reuse the previous step's guided
velocities instead of running the model (all its passes: positive, negative, sync). Each modality keeps its own
estimate of how much its velocity changes per step (relative mean absolute change between the last two computed
steps); the estimates accumulate over skipped steps, and a step is skipped only while both accumulated changes stay
below the threshold — audio settles earlier than video, so a joint measure would let the (small) audio latent change
unnoticed under the video's. The first two steps and the last run always. 0 = off: today's numbers exactly.
docs/speed.md measures forwards saved against quality.

Same numbers, less work than the reference: the two passes run as one batch of two (the skipped block applies
to the negative row only, ``skip_mask=[False, True]``), and the text embeddings plus every cross-attention's
text keys/values are computed once per generation (``model.prepare_text``). ``batched_cfg=False,
cache_text=False`` gives the reference's naive loop (benchmarks, or the smallest memory footprint).
Memory: the batch of two doubles the activations of one forward (an out-of-memory error falls back to two passes
for the rest of the run); the cached text keys/values hold 30 blocks x 2 towers x (K, V) x 512 x 3072 values per
prompt, about 0.75 GB in bf16 for the prompt and the negatives at full size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch

from ovi_core import interrupt, knobs
from ovi_core.errors import OviInputError, OviInterrupted
from ovi_core.schedulers import SCHEDULERS
from ovi_core.sizes import AUDIO_LATENT_CHANNELS, VIDEO_LATENT_CHANNELS

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class SamplingSettings:
    """The sampler's knobs, shared by the nodes and the command line; defaults, ranges and meaning in
    ovi_core.knobs (our defaults = the reference's yaml/gradio).

    ``sample_joint(model, text, ..., **settings.as_kwargs())`` passes them on. Invalid values raise
    OviInputError when the object is built."""

    solver: str = knobs.SOLVER.default
    steps: int = knobs.STEPS.default
    shift: float = knobs.SHIFT.default
    video_guidance: float = knobs.VIDEO_GUIDANCE.default
    audio_guidance: float = knobs.AUDIO_GUIDANCE.default
    slg_layer: int = knobs.SLG_LAYER.default  # fused block skipped in the negative pass; 0 or -1 = off
    seed: int = knobs.SEED.default
    sync_guidance: float = knobs.SYNC_GUIDANCE.default  # 0 = off (no extra pass)
    sync_cut: str = knobs.SYNC_CUT.default
    cache_threshold: float = knobs.CACHE_THRESHOLD.default  # step cache: 0 = off (every step runs the model)

    def __post_init__(self):
        knobs.check_sampling(**self.as_kwargs())

    def as_kwargs(self) -> dict:
        return asdict(self)


@dataclass
class PromptEmbeddings:
    """The three text-encoder outputs of one generation, each [tokens, 4096] (umT5-XXL states, unpadded)."""

    positive: torch.Tensor
    video_negative: torch.Tensor
    audio_negative: torch.Tensor


class StepLatents(NamedTuple):
    """Handed to the per-step callback: latents after the step and the denoised estimates x0 = x − σ·v that the
    step was computed from (better previews than the noisy latents). Batch-first: [1, 48, F, h, w], [1, L, 20]."""

    video: torch.Tensor
    audio: torch.Tensor
    video_denoised: torch.Tensor
    audio_denoised: torch.Tensor


StepCallback = Callable[[int, int, StepLatents], None]  # (steps done 1..total, total, latents)


# ---- argument checks ---------------------------------------------------------------------------------------------
def sync_targets(cut: str) -> tuple[bool, bool]:
    """(video, audio): the modalities whose input a cut removes, the ones sync guidance pushes."""
    return cut in ("both", "audio_to_video"), cut in ("both", "video_to_audio")


def _check_video_latent(name: str, x: torch.Tensor, frames: int | None = None) -> torch.Tensor:
    """[48, F, h, w] or [1, 48, F, h, w] -> float32 [1, 48, F, h, w]."""
    if not isinstance(x, torch.Tensor):
        raise OviInputError(f"{name} must be a tensor [48, F, h, w], got {type(x).__name__}")
    if x.dim() == 4:
        x = x.unsqueeze(0)
    if x.dim() != 5 or x.shape[0] != 1 or x.shape[1] != VIDEO_LATENT_CHANNELS or (frames and x.shape[2] != frames):
        want = f"[{VIDEO_LATENT_CHANNELS}, {frames or 'F'}, h, w]"
        raise OviInputError(f"{name} must be {want} (Wan2.2 latent, batch 1), got {list(x.shape)}")
    if x.shape[3] % 2 or x.shape[4] % 2:
        raise OviInputError(f"{name} height and width must be even (pixel sides multiples of 32), got {list(x.shape)}")
    return x.float()


def _check_audio_latent(name: str, x: torch.Tensor) -> torch.Tensor:
    """[L, 20] or [1, L, 20] -> float32 [1, L, 20]."""
    if not isinstance(x, torch.Tensor):
        raise OviInputError(f"{name} must be a tensor [L, 20], got {type(x).__name__}")
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[0] != 1 or x.shape[2] != AUDIO_LATENT_CHANNELS or x.shape[1] < 1:
        raise OviInputError(
            f"{name} must be [L, {AUDIO_LATENT_CHANNELS}] (MMAudio latent, channel last), got {list(x.shape)}"
        )
    return x.float()


def make_noise(video_shape, audio_shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's initial noises: video [48, F, h, w] and audio [L, 20], float32 on the CPU, each from its
    own generator seeded with ``seed`` (so both start from the same random stream)."""
    knobs.check(knobs.SEED, seed)
    return _seeded_noise(video_shape, audio_shape, seed)


def _seeded_noise(video_shape, audio_shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """make_noise for a seed already checked (sample_joint checks it with the other knobs)."""
    video_shape, audio_shape = tuple(int(s) for s in video_shape), tuple(int(s) for s in audio_shape)
    if len(video_shape) != 4 or video_shape[0] != VIDEO_LATENT_CHANNELS or min(video_shape) < 1:
        raise OviInputError(f"video_shape must be ({VIDEO_LATENT_CHANNELS}, F, h, w), got {video_shape}")
    if len(audio_shape) != 2 or audio_shape[1] != AUDIO_LATENT_CHANNELS or audio_shape[0] < 1:
        raise OviInputError(f"audio_shape must be (L, {AUDIO_LATENT_CHANNELS}), got {audio_shape}")
    video = torch.randn(video_shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
    audio = torch.randn(audio_shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
    return video, audio


def _num_layers(model) -> int | None:
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "num_layers"):
        return cfg.num_layers
    blocks = getattr(getattr(model, "video_model", None), "blocks", None)
    return len(blocks) if blocks is not None else None


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


# ---- the two guidance passes -------------------------------------------------------------------------------------
class _GuidancePasses:
    """Runs the positive and negative passes of one step, batched or one after the other; the text state is
    prepared once here (cache_text) or handed to the model as raw embeddings at every call (reference)."""

    def __init__(self, model, text: PromptEmbeddings, slg_layer: int, i2v: bool, batched: bool, cache_text: bool):
        self.model, self.slg_layer, self.i2v, self.batched, self.cache_text = model, slg_layer, i2v, batched, cache_text
        self.pos_ctx = ([text.positive], [text.positive])  # (video tower, audio tower)
        self.neg_ctx = ([text.video_negative], [text.audio_negative])
        self.both_ctx = ([text.positive, text.video_negative], [text.positive, text.audio_negative])
        self.both = self.pos = self.neg = None
        if cache_text:
            if batched:
                self.both = model.prepare_text(*self.both_ctx)  # rows: positive, negative
            else:
                self.pos, self.neg = model.prepare_text(*self.pos_ctx), model.prepare_text(*self.neg_ctx)
        self.skip_mask = torch.tensor([False, True], device=_model_device(model))

    def _call(self, video, audio, t, ctx, text, **kw):
        if self.cache_text:
            return self.model(video, audio, t, text=text, first_frame_is_clean=self.i2v, **kw)
        return self.model(video, audio, t, *ctx, first_frame_is_clean=self.i2v, **kw)

    def __call__(self, video, audio, t):
        """(video_pos, video_neg, audio_pos, audio_neg), each with batch 1."""
        if self.batched:
            try:
                return self._batched(video, audio, t)
            except torch.OutOfMemoryError:
                pass  # handled below, once the failed forward's tensors are released with the traceback
            logger.warning("out of memory running the two guidance passes as one batch; "
                           "continuing with one pass at a time (slower, less memory)")
            self._unbatch()
        return self._sequential(video, audio, t)

    def _batched(self, video, audio, t):
        mask = self.skip_mask if self.slg_layer > 0 else None
        out_v, out_a = self._call(video.repeat(2, 1, 1, 1, 1), audio.repeat(2, 1, 1), t.repeat(2), self.both_ctx,
                                  self.both, slg_layer=self.slg_layer, skip_mask=mask)
        return out_v[:1], out_v[1:], out_a[:1], out_a[1:]

    def _sequential(self, video, audio, t):
        pos_v, pos_a = self._call(video, audio, t, self.pos_ctx, self.pos)
        neg_v, neg_a = self._call(video, audio, t, self.neg_ctx, self.neg, slg_layer=self.slg_layer)
        return pos_v, neg_v, pos_a, neg_a

    def cut(self, video, audio, t, fusion_cut: str):
        """The sync-guidance pass: the positive prompt with the fusion attention cut, no SLG -> (video, audio)."""
        if not self.cache_text:
            return self._call(video, audio, t, self.pos_ctx, None, fusion_cut=fusion_cut)
        text = self.both.rows(slice(0, 1)) if self.both is not None else self.pos
        return self._call(video, audio, t, self.pos_ctx, text, fusion_cut=fusion_cut)

    def _unbatch(self):
        self.batched = False
        if self.both is not None:
            self.both = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.pos, self.neg = self.model.prepare_text(*self.pos_ctx), self.model.prepare_text(*self.neg_ctx)
        elif torch.cuda.is_available():
            torch.cuda.empty_cache()


# ---- the step cache ----------------------------------------------------------------------------------------------
def _relative_change(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new - old).abs().mean() / old.abs().mean().clamp_min(1e-12))


class StepCache:
    """Decides per step whether the model runs or the previous guided velocities are reused (module docstring).

    ``skipped``: steps that reused the velocities; ``rates``: the last measured per-step relative change of the video
    and audio velocities."""

    def __init__(self, threshold: float, steps: int):
        knobs.check(knobs.CACHE_THRESHOLD, threshold)  # the threshold's one check (also for a caller's own cache=)
        self.threshold, self.steps = float(threshold), steps
        self.skipped = 0
        self.last = None  # (step, video velocity, audio velocity) of the last computed step
        self.rates = None  # (video, audio) relative change per step
        self.accumulated = [0.0, 0.0]

    def reuse(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The velocities to reuse at step i, or None: run the model."""
        if self.threshold <= 0 or self.rates is None or i == self.steps - 1:
            return None
        grown = [acc + rate for acc, rate in zip(self.accumulated, self.rates)]
        if max(grown) >= self.threshold:
            return None
        self.accumulated = grown
        self.skipped += 1
        return self.last[1], self.last[2]

    def computed(self, i: int, video: torch.Tensor, audio: torch.Tensor) -> None:
        """Step i ran the model and gave these guided velocities."""
        if self.threshold <= 0:
            return
        if self.last is not None:
            gap = i - self.last[0]
            self.rates = (_relative_change(video, self.last[1]) / gap, _relative_change(audio, self.last[2]) / gap)
        self.last, self.accumulated = (i, video, audio), [0.0, 0.0]


# ---- the loop ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_joint(
    model,
    text: PromptEmbeddings,
    *,
    video_noise: torch.Tensor | None = None,
    audio_noise: torch.Tensor | None = None,
    video_shape: tuple[int, int, int, int] | None = None,
    audio_shape: tuple[int, int] | None = None,
    seed: int | None = None,
    solver: str = knobs.SOLVER.default,
    steps: int = knobs.STEPS.default,
    shift: float = knobs.SHIFT.default,
    video_guidance: float = knobs.VIDEO_GUIDANCE.default,
    audio_guidance: float = knobs.AUDIO_GUIDANCE.default,
    slg_layer: int = knobs.SLG_LAYER.default,
    first_frame_latent: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    should_interrupt: Callable[[], bool | None] | None = None,
    batched_cfg: bool = True,
    cache_text: bool = True,
    sync_guidance: float = knobs.SYNC_GUIDANCE.default,
    sync_cut: str = knobs.SYNC_CUT.default,
    cache_threshold: float = knobs.CACHE_THRESHOLD.default,
    cache: StepCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one clip with Ovi's joint loop; returns float32 latents video [1, 48, F, h, w], audio [1, L, 20].

    model: an OviFusion (or anything with its ``prepare_text`` / ``forward`` contract).
    text: the prompt and the two negative prompts, encoded.
    Noise: pass ``video_noise`` [48, F, h, w] and ``audio_noise`` [L, 20], or ``video_shape``/``audio_shape`` and a
      ``seed`` (see make_noise: two CPU generators with the same seed, as the reference; identical on any device).
      Given noise wins over a seed.
    first_frame_latent: image-to-video, the encoded first frame [48, 1, h, w] (or [1, 48, 1, h, w]).
    callback(step, total, StepLatents) runs after every step; ``should_interrupt()`` before every step — return
      True to stop (OviInterrupted is raised) or raise your own exception. Either stops sampling: exceptions
      propagate. The process-wide checkers of ``ovi_core.interrupt`` are consulted too, before every step and
      between the model's blocks.
    batched_cfg / cache_text: see the module docstring; both False = the reference's loop.
    sync_guidance / sync_cut: the lip-sync knob (module docstring); 0 = off, no extra pass.
    cache_threshold: the step cache (module docstring); 0 = off. ``cache``: a StepCache to use instead (to read its
      ``skipped`` count afterwards); it overrides ``cache_threshold``.
    """
    # 0. the one check of the knobs (cache_threshold: StepCache's; the noise shapes: the noise's)
    knobs.check_sampling(_num_layers(model), solver=solver, steps=steps, shift=shift, video_guidance=video_guidance,
                         audio_guidance=audio_guidance, slg_layer=slg_layer, sync_guidance=sync_guidance,
                         sync_cut=sync_cut, **({} if seed is None else {"seed": seed}))  # no seed: the caller's noise
    cache = StepCache(cache_threshold, steps) if cache is None else cache
    if not isinstance(text, PromptEmbeddings):
        raise OviInputError(
            f"text must be a PromptEmbeddings (prompt, video negative, audio negative), got {type(text).__name__}"
        )
    device = _model_device(model)

    # 1. the starting latents, float32 batch 1 on the model's device: noise [1, 48, F, h, w] and [1, L, 20], and for
    #    image-to-video the clean first frame [1, 48, 1, h, w] (else None)
    video, audio = _initial_noise(video_noise, audio_noise, video_shape, audio_shape, seed, device)
    first = _first_frame(first_frame_latent, video, device)

    # 2. one scheduler per modality, identical schedules (from the table: solver, steps, shift were checked in 0.);
    #    the guidance passes (text prepared once)
    sched_v, sched_a = SCHEDULERS[solver](shift), SCHEDULERS[solver](shift)
    sched_v.set_timesteps(steps)
    sched_a.set_timesteps(steps)
    passes = _GuidancePasses(model, text, slg_layer, first is not None, batched_cfg, cache_text)
    logger.info("Ovi sampling: %s, %d steps, shift %g, guidance video %g / audio %g, SLG layer %d, %s, "
                "video %s, audio %s", solver, steps, shift, video_guidance, audio_guidance, slg_layer,
                "batched passes" if batched_cfg else "two passes", list(video.shape[1:]), list(audio.shape[1:]))
    if sync_guidance > 0:
        logger.info("Ovi sync guidance %g (cut %s): one more forward per step", sync_guidance, sync_cut)

    # 3. the loop
    for i in range(steps):
        # 3a. stop here if asked (the caller's check, then the process-wide checkers; also checked per block)
        if should_interrupt is not None and should_interrupt():
            raise OviInterrupted(f"sampling stopped on request before step {i + 1} of {steps}")
        interrupt.check("sampling")
        # 3b. image-to-video: latent frame 0 is the clean image latent (its tokens get t = 0)
        if first is not None:
            video = _with_first_frame(video, first)
        t = torch.full((1,), sched_v.timesteps[i].item(), dtype=sched_v.timesteps.dtype, device=device)  # [1]

        # 3c. the guided velocities, [1, 48, F, h, w] and [1, L, 20]: the step cache's, or the model's passes
        velocities = cache.reuse(i)
        if velocities is None:
            velocities = _guided_velocities(passes, video, audio, t, video_guidance, audio_guidance, sync_guidance,
                                            sync_cut)
            cache.computed(i, *velocities)
        guided_v, guided_a = velocities

        # 3d. each modality stepped by its own scheduler; the callback sees the latents and the denoised estimates
        if callback is not None:
            denoised = sched_v.denoised(guided_v, video), sched_a.denoised(guided_a, audio)
        video = sched_v.step(guided_v, video)
        audio = sched_a.step(guided_a, audio)
        if callback is not None:
            callback(i + 1, steps, StepLatents(video, audio, *denoised))

    # 4. image-to-video: the clean first frame once more
    if first is not None:
        video = _with_first_frame(video, first)
    if cache.skipped:
        logger.info("Ovi step cache (threshold %g): %d of %d steps reused the previous velocities (%.2fx fewer "
                    "forwards)", cache.threshold, cache.skipped, steps, steps / (steps - cache.skipped))
    return video, audio


def _initial_noise(video_noise, audio_noise, video_shape, audio_shape, seed, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The given noises, or make_noise(video_shape, audio_shape, seed) -> float32 [1, 48, F, h, w], [1, L, 20] on
    ``device``; copies, the caller's tensors are left alone."""
    if video_noise is None or audio_noise is None:
        if video_noise is not None or audio_noise is not None:
            raise OviInputError(
                "pass both video_noise and audio_noise, or neither (then video_shape, audio_shape and seed)"
            )
        if video_shape is None or audio_shape is None or seed is None:
            raise OviInputError("without noise tensors, video_shape, audio_shape and seed are all needed")
        video_noise, audio_noise = _seeded_noise(video_shape, audio_shape, seed)  # the seed: checked in 0.
    video = _check_video_latent("video_noise", video_noise).to(device, copy=True)
    audio = _check_audio_latent("audio_noise", audio_noise).to(device, copy=True)
    return video, audio


def _first_frame(first_frame_latent, video: torch.Tensor, device) -> torch.Tensor | None:
    """Image-to-video: the encoded first frame as float32 [1, 48, 1, h, w] on ``device``, checked against the video
    latent's size; None for text-to-video."""
    if first_frame_latent is None:
        return None
    first = _check_video_latent("first_frame_latent", first_frame_latent, frames=1).to(device)
    if first.shape[3:] != video.shape[3:]:
        raise OviInputError(
            f"first_frame_latent is {first.shape[3]}x{first.shape[4]} latent cells but the video latent is "
            f"{video.shape[3]}x{video.shape[4]}; encode the image at the generation size"
        )
    return first


def _guided_velocities(passes: _GuidancePasses, video, audio, t, video_guidance: float, audio_guidance: float,
                       sync_guidance: float, sync_cut: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's model work: positive and negative passes, v = neg + g·(pos − neg) per modality, and with sync
    guidance one more pass with the fusion cut, v += s·(v_pos − v_cut) on the modalities whose input it removed."""
    pos_v, neg_v, pos_a, neg_a = passes(video, audio, t)
    guided_v = neg_v + video_guidance * (pos_v - neg_v)
    guided_a = neg_a + audio_guidance * (pos_a - neg_a)
    if sync_guidance > 0:
        cut_v, cut_a = passes.cut(video, audio, t, sync_cut)
        push_v, push_a = sync_targets(sync_cut)
        guided_v = guided_v + sync_guidance * (pos_v - cut_v) if push_v else guided_v
        guided_a = guided_a + sync_guidance * (pos_a - cut_a) if push_a else guided_a
    return guided_v, guided_a


def _with_first_frame(video: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Latent frame 0 replaced by the clean image latent; a new tensor (the reference writes in place, same numbers),
    so latents handed to the callback stay as they were."""
    return torch.cat([first, video[:, :, 1:]], dim=2)


__all__ = [
    "PromptEmbeddings",
    "SamplingSettings",
    "StepCache",
    "StepLatents",
    "make_noise",
    "sample_joint",
]
