"""The mux node (V3): frames + sound -> an mp4 in ComfyUI's output folder, a preview, and core's VIDEO."""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import torch

from ovi_core.media import audio_to_numpy, rgb_channels

from . import bridge
from .bridge import io
from .convert import audio_from_comfy, audio_to_comfy

log = logging.getLogger(__name__)


def _check_frames(images) -> torch.Tensor:
    from ovi_core.errors import OviInputError

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] not in (1, 3, 4):
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise OviInputError(f"images must be an IMAGE batch [frames, height, width, 3], got {shape}")
    return rgb_channels(images, "images")


def _check_audio(audio) -> tuple[torch.Tensor, int]:
    """AUDIO -> (waveform [C, N], sample rate); one clip only."""
    from ovi_core.errors import OviInputError

    wave, rate = audio_from_comfy(audio, "audio", one=True)
    if wave.shape[1] not in (1, 2):
        raise OviInputError(f"audio waveform must be [batch, 1 or 2 channels, samples], got {list(wave.shape)}")
    return wave[0].float().cpu(), rate


# What ComfyUI appends to the prefix ("_00001_.mp4") plus what the temporary name adds while writing.
NAME_RESERVE = len("_00001_.mp4") + 40


def prefix_problem(prefix) -> str | None:
    """None when filename_prefix is a usable name under ComfyUI's output folder, else the message."""
    from ovi_core.outpaths import OutputPathError, check_name_part

    if isinstance(prefix, str) and (os.path.isabs(prefix) or prefix.startswith(("/", "\\")) or
                                    (len(prefix) > 1 and prefix[1] == ":")):
        return (f"filename_prefix {prefix[:60]!r} is an absolute path; give a name inside ComfyUI's output folder, "
                "such as 'Ovi/clip' (a folder part makes a subfolder)")
    try:
        check_name_part(prefix, "filename_prefix", reserve=NAME_RESERVE, allow_folders=True)
    except OutputPathError as exc:
        return str(exc)
    return None


def fps_problem(fps) -> str | None:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or not 1 <= fps <= 120:
        return f"fps must be a number of frames per second from 1 to 120 (Ovi makes 24), got {fps!r}"
    return None


def aligned_audio(wave: torch.Tensor, sample_rate: int, num_frames: int, fps: float) -> dict:
    """The AUDIO exactly as written into the mp4: padded with silence / cut to num_frames / fps (ovi_core.mux rule)."""
    from ovi_core.mux import align_audio_to_video

    samples, _ = align_audio_to_video(audio_to_numpy(wave), sample_rate, num_frames, fps)
    return audio_to_comfy(torch.from_numpy(np.ascontiguousarray(samples)), sample_rate)


def mux_clip(images, audio, fps, filename_prefix, prompt=None, extra_pnginfo=None):
    """Writes the mp4; returns (VIDEO, the preview entry)."""
    from ovi_core.errors import OviInputError
    from ovi_core.mux import write_mp4
    from ovi_core.outpaths import OutputPathError

    if (problem := prefix_problem(filename_prefix)) is not None:
        raise OutputPathError(problem)
    if (problem := fps_problem(fps)) is not None:
        raise OviInputError(problem)
    frames = _check_frames(images)
    wave, rate = _check_audio(audio)
    metadata = {"prompt": json.dumps(prompt)} if prompt is not None else {}
    metadata.update({k: json.dumps(v) for k, v in (extra_pnginfo or {}).items()})
    sound = aligned_audio(wave, rate, frames.shape[0], fps)  # the one place the length rule is applied
    try:
        path, file, subfolder = bridge.output_path(filename_prefix, frames.shape[2], frames.shape[1], "mp4")
        write_mp4(path, frames, fps=fps, audio=sound["waveform"][0], sample_rate=rate, metadata=metadata)
    except OSError as exc:  # a folder that cannot be made or written (a file in the way, permissions, disk full)
        where = getattr(exc, "filename", None) or filename_prefix
        raise OutputPathError(f"cannot write the mp4 for filename_prefix {filename_prefix!r} ({where}): "
                              f"{exc.strerror or exc}. Check that ComfyUI's output folder and the prefix's "
                              "subfolder are writable folders, or pick another prefix") from None
    video = bridge.make_video(path, frames, sound, fps)
    return video, {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}], "animated": (True,)}


class OviMux(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviMux", display_name="Ovi Mux (mp4)", category="Ovi/output",
            description=("Joins frames and sound into an mp4 (H.264 yuv420p + AAC) in ComfyUI's output folder, "
                         "written atomically, with a preview; also outputs core's VIDEO. The sound is fitted to the "
                         "video length: a shorter sound is padded with silence, a longer one loses only what lies "
                         "past the last frame (logged)."),
            inputs=[
                io.Image.Input("images", tooltip="The frames, in order (Ovi Video Decode, or any IMAGE batch)."),
                io.Audio.Input("audio", tooltip=(
                    "The sound (Ovi Audio Decode, LoadAudio, ...): mono or stereo, any sample rate "
                    "(AAC-incompatible rates go to 48 kHz).")),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=1.0, tooltip=(
                    "Frames per second. Ovi makes 24 fps (121 frames = 5.04 s).")),
                io.String.Input("filename_prefix", default="Ovi/ovi", tooltip=(
                    "Output file name prefix; a folder part goes into a subfolder of ComfyUI's output folder. Not "
                    "empty, no leading dot, no '..', at most 200 characters.")),
            ],
            outputs=[io.Video.Output("video", tooltip=(
                "The clip as core's VIDEO (frames + the fitted sound) — for SaveVideo, GetVideoComponents, ..."))],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix=None):
        """The prefix before anything runs (fps is checked by ComfyUI's min/max, and for NaN when the node runs). A
        missing input is left to ComfyUI; a linked one (None) is checked when the node runs."""
        if filename_prefix is None:
            return True
        return prefix_problem(filename_prefix) or True

    @classmethod
    def execute(cls, images, audio, fps, filename_prefix):
        hidden = cls.hidden
        video, preview = mux_clip(images, audio, fps, filename_prefix, getattr(hidden, "prompt", None),
                                  getattr(hidden, "extra_pnginfo", None))
        return io.NodeOutput(video, ui=preview)
