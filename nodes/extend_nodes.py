"""Clips longer than one window, with continuous sound (V3): Ovi Extend makes the next window's joint LATENT from the
previous window, Ovi Join Clips joins the decoded windows.

The seam. Consecutive windows share ``overlap`` seconds of time (a multiple of 0.5 s; 0 = only the last frame):
  * video: the next window's first 4m+1 frames are the previous window's last 4m+1 decoded frames, encoded again
    with the Wan2.2 VAE (Ovi's video VAE or core's; frame 0 alone, as Ovi's image-to-video start, then 4 frames per
    latent) and held by the noise mask: m+1 clean latent frames, m = overlap·24/4. Audio and video share the
    overlap because Ovi ties audio step i to video time 0.19676·i inside a window: holding 1 s of sound while the
    video restarts at the last frame only would put that sound 1 s late against the picture;
  * audio: the previous window's audio latents from the seam on are held at the start of the next window (its clean
    leading run of audio steps), so speech and ambience carry across; the seam lies ``advance`` = F−1−4m frames
    after the previous window's start, i.e. advance·31.25/24 audio latents — a whole number for 1 s on 5 s windows
    and 2 s / 6 s on 10 s windows, else rounded: the held audio then sits up to half a latent (16 ms) off its true
    place (logged), without drifting, because Ovi Join Clips places every window's sound at its video's time;
  * joining: the repeated 4m+1 frames are dropped (the previous window's own frames stay), the sounds overlap by
    (next sound's length − advance/24 s) samples and are cross-faded linearly there. Joined frames = sum of the
    windows' frames − (W−1)(4m+1); joined samples = sum of the windows' samples − the overlaps.

Both nodes run without ComfyUI too (``bridge.io`` / ``bridge.nested``); the pure helpers are ``plan_seam``,
``next_window_latent`` and ``join_clips``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ovi_core.config import FPS
from ovi_core.errors import OviInputError
from ovi_core.media import clip_to_images, images_to_clip
from ovi_core.mmaudio_vae import SAMPLE_RATE, SAMPLES_PER_LATENT
from ovi_core.sizes import VIDEO_LATENT_CHANNELS

from . import bridge
from .bridge import io
from .convert import audio_from_comfy, audio_to_comfy, joint_latent_parts, video_latent_to_comfy
from .handles import OviVideoVAEType

log = logging.getLogger(__name__)
CoreVAEType = io.Custom("VAE")

CATEGORY = "Ovi/extend"
FRAMES_PER_LATENT = 4  # Wan2.2 VAE: latent 0 = frame 0, then 4 frames each
OVERLAP_STEP = 0.5  # seconds = 12 frames = 3 video latents: whole frames and whole samples at common rates
MAX_OVERLAP = 9.5


def _audio_latents_per_second() -> float:
    return SAMPLE_RATE / SAMPLES_PER_LATENT  # 31.25


@dataclass(frozen=True)
class Seam:
    """Where window k+1 starts inside window k (all counts; the frame rate is Ovi's 24 fps)."""

    kept_frames: int  # pixel frames window k+1 repeats: 4m+1
    kept_latents: int  # video latent frames held clean: m+1
    advance_frames: int  # frames between the windows' starts: F−1−4m
    audio_shift: int  # window k's audio latents before the seam (window k+1 holds the rest)
    held_audio: int  # audio latents held clean at the start of window k+1
    audio_offset_ms: float  # where the held audio sits relative to its true time (0 when the seam is whole)


def overlap_latents(overlap_seconds: float) -> int:
    """m: the video latents past frame 0 that an overlap spans (0.5 s = 12 frames = 3 latents). The overlap is
    snapped to a multiple of 0.5 s (logged when it was not one)."""

    if isinstance(overlap_seconds, bool) or not isinstance(overlap_seconds, (int, float)) \
            or not math.isfinite(overlap_seconds) or overlap_seconds < 0:
        raise OviInputError(f"overlap must be a number of seconds ≥ 0 (e.g. 1.0), got {overlap_seconds!r}")
    steps = round(overlap_seconds / OVERLAP_STEP)
    if abs(steps * OVERLAP_STEP - overlap_seconds) > 1e-6:
        log.warning("Ovi Extend: overlap %.3g s is not a multiple of %.1f s; using %.1f s (whole frames and audio "
                    "samples at the seam)", overlap_seconds, OVERLAP_STEP, steps * OVERLAP_STEP)
    return steps * round(OVERLAP_STEP * FPS) // FRAMES_PER_LATENT


def plan_seam(video_latents: int, audio_latents: int, overlap_seconds: float) -> Seam:
    """The seam between two windows of ``video_latents`` / ``audio_latents`` (the previous window's latent)."""

    m = overlap_latents(overlap_seconds)
    frames = FRAMES_PER_LATENT * (video_latents - 1) + 1
    seconds = frames / FPS
    if m + 1 >= video_latents:
        longest = (video_latents - 2) * FRAMES_PER_LATENT / FPS
        longest = math.floor(longest / OVERLAP_STEP) * OVERLAP_STEP
        raise OviInputError(f"overlap {overlap_seconds:g} s is as long as the window itself ({frames} frames = "
                            f"{seconds:.2f} s): nothing new would be generated. Use less than the window, at most "
                            f"{longest:g} s (1 s is a good seam for 5 s windows)")
    advance = frames - 1 - FRAMES_PER_LATENT * m
    exact = advance * _audio_latents_per_second() / FPS
    shift = round(exact)
    held = audio_latents - shift
    if not 0 < held < audio_latents:
        raise OviInputError(f"the previous window's audio latent has {audio_latents} steps, which does not cover its "
                            f"video ({frames} frames ≈ {math.ceil(frames / FPS * _audio_latents_per_second())} "
                            "steps): connect the latent of the window the frames come from")
    offset_ms = (shift - exact) / _audio_latents_per_second() * 1000.0
    return Seam(FRAMES_PER_LATENT * m + 1, m + 1, advance, shift, held, offset_ms)


# ---- the next window's latent --------------------------------------------------------------------------------------
def _joint(latent) -> tuple[torch.Tensor, torch.Tensor]:

    video, audio = joint_latent_parts(latent, "the previous window's joint audio+video LATENT (the output of "
                                      "SamplerCustomAdvanced / KSampler / Ovi Sampler's latent), not a video or audio "
                                      "latent")
    if video.shape[0] != 1 or audio.shape[0] != 1:
        raise OviInputError(f"latent holds a batch of {video.shape[0]} clips; Ovi Extend continues one clip (pick it "
                            "with core LatentFromBatch before decoding and extending)")
    return video, audio


def _tail_frames(images, count: int, height: int, width: int) -> torch.Tensor:
    """The last ``count`` frames of an IMAGE batch as VAE input [1, 3, count, H, W] in [-1, 1]."""

    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise OviInputError(f"images must be the previous window's decoded frames, an IMAGE batch [frames, H, W, 3]; "
                            f"got {shape}")
    if images.shape[0] < count:
        what = "a single image" if images.shape[0] == 1 else f"{images.shape[0]} frames"
        raise OviInputError(f"images holds {what}, but the overlap repeats the previous window's last {count} frames: "
                            "connect the previous window's decoded frames (Ovi Video Decode), or set overlap to 0 to "
                            "continue from its last frame only")
    if tuple(images.shape[1:3]) != (height, width):
        raise OviInputError(f"images are {images.shape[2]}x{images.shape[1]} but the latent is {width}x{height}: "
                            "connect the frames decoded from this latent")
    return images_to_clip(images[-count:])  # [1, 3, count, H, W]


def next_window_latent(video: torch.Tensor, audio: torch.Tensor, start_latent: torch.Tensor, seam: Seam) -> dict:
    """The next window's joint LATENT: raw video [1, 48, F, h, w] whose first m+1 frames are ``start_latent`` (raw),
    audio [1, 20, L] whose first ``held_audio`` steps are the previous audio from ``audio_shift`` on, both held by
    the noise mask (0 = keep), the rest zeros to generate."""
    new_video = torch.zeros_like(video)
    new_video[:, :, : seam.kept_latents] = start_latent.to(video)
    new_audio = torch.zeros_like(audio)
    new_audio[:, :, : seam.held_audio] = audio[:, :, seam.audio_shift:]
    video_mask = torch.ones(1, 1, *video.shape[2:])
    video_mask[:, :, : seam.kept_latents] = 0.0
    audio_mask = torch.ones(1, 1, audio.shape[2])
    audio_mask[:, :, : seam.held_audio] = 0.0
    return {"samples": bridge.nested((new_video, new_audio)), "noise_mask": bridge.nested((video_mask, audio_mask))}


def _encode_start(frames: torch.Tensor, video_vae, vae, device) -> torch.Tensor:
    """[1, 3, 4m+1, H, W] in [-1, 1] -> the raw Wan2.2 latent [1, 48, m+1, h, w]: with Ovi's video VAE
    (OVI_VIDEO_VAE, normalised output) or core's VAE (VAELoader with wan2.2_vae; raw output)."""


    if video_vae is not None:
        return video_latent_to_comfy(video_vae.acquire().encode(frames), device)["samples"]
    if vae is None:
        raise OviInputError("Ovi Extend needs a video VAE to encode the next window's start frames: connect Ovi Video "
                            "VAE Loader to video_vae, or core VAELoader (wan2.2_vae) to vae")
    pixels = clip_to_images(frames)  # IMAGE [4m+1, H, W, 3]
    out = vae.encode(pixels)
    if out.dim() != 5 or out.shape[1] != VIDEO_LATENT_CHANNELS or out.shape[2] != (frames.shape[2] + 3) // 4:
        raise OviInputError(f"vae encoded {frames.shape[2]} frames to {list(out.shape)}, not a Wan2.2 latent "
                            f"[1, 48, {(frames.shape[2] + 3) // 4}, h, w]: load wan2.2_vae.safetensors in VAELoader")
    return out.to(device)


def extend(latent, images, video_vae, overlap_seconds: float, vae=None) -> dict:
    video, audio = _joint(latent)
    seam = plan_seam(video.shape[2], audio.shape[2], overlap_seconds)
    frames = _tail_frames(images, seam.kept_frames, video.shape[3] * 16, video.shape[4] * 16)
    window = seam.kept_frames + seam.advance_frames
    if images.shape[0] != window:
        log.info("Ovi Extend: images holds %d frames, the latent's window %d; its last %d start the next window (they "
                 "must be the end of the clip this latent decodes to)", images.shape[0], window, seam.kept_frames)
    start = _encode_start(frames, video_vae, vae, video.device)
    log.info("Ovi Extend: the next window repeats the last %d frames (%d video latents) and holds %d audio latents "
             "(%.3f s)%s", seam.kept_frames, seam.kept_latents, seam.held_audio,
             seam.held_audio / _audio_latents_per_second(),
             f"; the held audio sits {seam.audio_offset_ms:+.1f} ms off its true time (the seam is not a whole "
             "number of audio latents)" if seam.audio_offset_ms else "")
    return next_window_latent(video, audio, start, seam)


# ---- joining decoded windows ---------------------------------------------------------------------------------------
def _audio(audio, name: str) -> tuple[torch.Tensor, int]:
    wave, rate = audio_from_comfy(audio, name, one=True)
    return wave.float(), rate


def join_clips(images, audio, next_images, next_audio, overlap_seconds: float):
    """(IMAGE, AUDIO): ``images`` + ``next_images`` without its first 4m+1 frames (the repeated overlap); the sounds
    overlap by len(next sound) − advance/24·rate samples, cross-faded linearly; the next sound starts at the time of
    its window's first frame."""

    for name, frames in (("images", images), ("next_images", next_images)):
        if not isinstance(frames, torch.Tensor) or frames.dim() != 4:
            raise OviInputError(f"{name} must be an IMAGE batch [frames, H, W, C]")
    if images.shape[1:] != next_images.shape[1:]:
        raise OviInputError(f"the clips differ in size: {list(images.shape[1:])} and {list(next_images.shape[1:])}")
    kept = FRAMES_PER_LATENT * overlap_latents(overlap_seconds) + 1
    if next_images.shape[0] <= kept:
        what = "a single image" if next_images.shape[0] == 1 else f"{next_images.shape[0]} frames"
        raise OviInputError(f"next_images holds {what}; the overlap repeats {kept} frames at its start, so there is "
                            "nothing new to join. Connect the next window's decoded frames, and the same overlap as "
                            "in Ovi Extend")
    if images.shape[0] < kept:
        raise OviInputError(f"images holds {images.shape[0]} frames, fewer than the {kept} the overlap repeats")
    wave, rate = _audio(audio, "audio")
    next_wave, next_rate = _audio(next_audio, "next_audio")
    if rate != next_rate:
        raise OviInputError(f"the sounds have different sample rates ({rate} and {next_rate} Hz): decode both windows "
                            "with the same Ovi Audio Decode sample_rate")
    if wave.shape[1] != next_wave.shape[1]:
        log.info("Ovi Join Clips: mono and stereo sound; the mono one is used on both channels")
        channels = max(wave.shape[1], next_wave.shape[1])
        wave, next_wave = wave.expand(-1, channels, -1), next_wave.expand(-1, channels, -1)
    advance_frames = next_images.shape[0] - kept
    advance = advance_frames * rate / FPS
    if advance != int(advance):
        log.warning("Ovi Join Clips: %d frames at %d Hz is not a whole number of samples; rounded", advance_frames,
                    rate)
    overlap = next_wave.shape[2] - round(advance)
    if overlap < 0:
        raise OviInputError(f"next_audio ({next_wave.shape[2]} samples) is shorter than its window's new video "
                            f"({advance_frames} frames = {round(advance)} samples): connect the window's own sound")
    if overlap > wave.shape[2]:
        raise OviInputError(f"audio ({wave.shape[2]} samples) is shorter than the overlap ({overlap} samples)")
    ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / max(overlap, 1)  # 0 -> 1 over the overlap
    head, tail = wave[:, :, : wave.shape[2] - overlap], wave[:, :, wave.shape[2] - overlap:]
    faded = tail * (1.0 - ramp) + next_wave[:, :, :overlap] * ramp
    joined = torch.cat([head, faded, next_wave[:, :, overlap:]], dim=2)
    frames = torch.cat([images, next_images[kept:].to(images)], dim=0)
    return frames, audio_to_comfy(joined, rate)


# ---- nodes ---------------------------------------------------------------------------------------------------------
def _overlap_input():
    return io.Float.Input("overlap", default=1.0, min=0.0, max=MAX_OVERLAP, step=OVERLAP_STEP, tooltip=(
        "Seconds the windows share, a multiple of 0.5 (use the same value in Ovi Extend and Ovi Join Clips). The "
        "next window repeats the previous one's last frames and holds its sound over this time. 0 = only the last "
        "frame. 1 s on 5 s windows (2 s on 10 s windows) puts the seam on a whole audio latent."))


class OviExtend(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviExtend", display_name="Ovi Extend", category=CATEGORY,
            description=("The next window of a long clip: starts from the previous window's last frames and holds its "
                         "last sound (overlap), so speech and ambience carry across the seam. Sample it with a new "
                         "prompt, decode, and join with Ovi Join Clips."),
            inputs=[
                io.Latent.Input("latent", tooltip=(
                    "The previous window's joint audio+video LATENT (SamplerCustomAdvanced's output; for the first "
                    "extension the first window's).")),
                io.Image.Input("images", tooltip=(
                    "The previous window's decoded frames (Ovi Video Decode of that latent): the last ones are "
                    "encoded again as the next window's start.")),
                _overlap_input(),
                OviVideoVAEType.Input("video_vae", optional=True, tooltip=(
                    "Ovi Video VAE Loader's VAE, to encode the start frames (or connect core's VAE to vae).")),
                CoreVAEType.Input("vae", optional=True, tooltip=(
                    "Instead of video_vae: core VAELoader with wan2.2_vae.safetensors (as in the native workflows "
                    "that decode with core VAEDecode).")),
            ],
            outputs=[io.Latent.Output(tooltip=(
                "The next window's joint LATENT (same size and length) with the start frames and the held sound "
                "kept by its noise_mask: for SamplerCustomAdvanced (Ovi Guider with the window's prompt)."))],
        )

    @classmethod
    def execute(cls, latent, images, overlap, video_vae=None, vae=None) -> io.NodeOutput:
        return io.NodeOutput(extend(latent, images, video_vae, overlap, vae))


class OviJoinClips(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviJoinClips", display_name="Ovi Join Clips", category=CATEGORY,
            description=("Joins a clip and the next window made by Ovi Extend: the repeated frames appear once, the "
                         "sound is cross-faded over the overlap. Chain it: the joined clip + the next window."),
            inputs=[
                io.Image.Input("images", tooltip="The clip so far (the first window's frames, or a join's)."),
                io.Audio.Input("audio", tooltip="The clip's sound so far (decoded sound, or a join's)."),
                io.Image.Input("next_images", tooltip="The next window's decoded frames."),
                io.Audio.Input("next_audio", tooltip="The next window's decoded sound (same sample rate)."),
                _overlap_input(),
            ],
            outputs=[
                io.Image.Output("images", tooltip="All frames: the sum of the windows' frames minus the repeats."),
                io.Audio.Output("audio", tooltip=(
                    "All sound: the sum of the windows' samples minus the cross-faded overlaps.")),
            ],
        )

    @classmethod
    def execute(cls, images, audio, next_images, next_audio, overlap) -> io.NodeOutput:
        return io.NodeOutput(*join_clips(images, audio, next_images, next_audio, overlap))


EXTEND_NODES = [OviExtend, OviJoinClips]
