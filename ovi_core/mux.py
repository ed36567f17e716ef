"""Writing (and reading back) the mp4 of a generated clip: H.264 video + AAC audio, written atomically.

    info = write_mp4("clip.mp4", frames, fps=24, audio=waveform, sample_rate=16000)
    info = probe_mp4("clip.mp4")          # streams, frame count, sizes, durations

Audio/video alignment rule (every clip written here obeys it): the audio track lasts exactly as long as the
video (``num_frames / fps``), to the nearest sample, so the two durations in the file agree to well within one
video frame. Ovi's audio is a little shorter than its video (157 latents decode to 80,384 samples = 5.024 s;
121 frames at 24 fps last 5.042 s): the missing tail is filled with silence. Audio is never dropped silently:
if it is longer than the video, only the excess beyond the last frame is cut, and that is logged as a warning.

The file is first written to a hidden temporary name in the destination folder (``outpaths.partial_path``) and
published under its final name only when it is complete (``outpaths.publish``), so a crash, an error or Ctrl-C never
leaves a partial mp4 behind (the temporary file is removed on any exception, KeyboardInterrupt included; a run
killed with SIGKILL leaves one that the next ``outpaths.prepare_output`` in that folder removes). An existing file
is replaced only with ``overwrite=True``, also when it appeared while the clip was being written. The interrupt
checkers of ``ovi_core.interrupt`` are consulted once per encoded frame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ovi_core import interrupt
from ovi_core.errors import OviInputError, WrongFileError
from ovi_core.media import audio_to_numpy, frames_to_uint8
from ovi_core.outpaths import OutputPathError, partial_path, publish

logger = logging.getLogger(__name__)

# Sample rates the AAC encoder takes as they are (checked against FFmpeg's native encoder); others go to 48 kHz.
# x264's macroblock-tree rate control made the encoded bytes (and the decoded pixels) differ from run to run on the
# demo model's 64x64 clips: it reads memory it never wrote on some content, so a repeated run with the same seed
# gave another file. Without it the same frames always give the same file; the cost is a few % of bitrate.
X264_PARAMS = "mbtree=0"
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
FALLBACK_SAMPLE_RATE = 48000


@dataclass(frozen=True)
class AlignmentNote:
    """What align_audio_to_video did: samples added (silence) or cut, and the final length."""

    samples_in: int
    samples_out: int
    padded: int
    trimmed: int


@dataclass(frozen=True)
class Mp4Info:
    """What an mp4 holds, read back with PyAV (probe_mp4) or reported by write_mp4."""

    path: Path
    video_streams: int
    audio_streams: int
    video_codec: str | None
    audio_codec: str | None
    width: int
    height: int
    fps: float
    num_frames: int
    video_duration: float  # seconds
    audio_duration: float  # seconds (0.0 without audio)
    sample_rate: int
    audio_channels: int
    pix_fmt: str | None


def even_size(frames: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even width and height: odd sides get one more row/column (a copy of the edge)."""
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if not (pad_h or pad_w):
        return frames
    logger.warning("frame size %dx%d (width x height) is odd; H.264 yuv420p needs even sides, so the video is "
                   "written at %dx%d with the last row/column repeated", w, h, w + pad_w, h + pad_h)
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def align_audio_to_video(audio: np.ndarray, sample_rate: int, num_frames: int, fps: float) -> tuple[np.ndarray, AlignmentNote]:
    """Pad with silence (or cut the excess) so the audio lasts num_frames / fps, to the nearest sample."""
    target = int(round(num_frames * sample_rate / float(fps)))
    n = audio.shape[1]
    if n < target:
        audio = np.pad(audio, ((0, 0), (0, target - n)))
        logger.debug("audio %d samples, video %d frames: padded %d samples of silence", n, num_frames, target - n)
    elif n > target:
        logger.warning("the audio (%.3f s) is longer than the video (%d frames at %g fps = %.3f s); the last %d "
                       "samples (%.3f s) beyond the last frame are not written", n / sample_rate, num_frames, fps,
                       num_frames / fps, n - target, (n - target) / sample_rate)
        audio = audio[:, :target]
    return audio, AlignmentNote(n, target, max(0, target - n), max(0, n - target))


# ---- writing ---------------------------------------------------------------------------------------------------
def write_mp4(
    path: str | os.PathLike,
    frames,
    fps: float = 24,
    audio=None,
    sample_rate: int = 16000,
    *,
    crf: int = 18,
    preset: str = "medium",
    metadata: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> Mp4Info:
    """Write frames [T, H, W, 3] (uint8, or float 0..1) and optional audio [C, N] (float -1..1) as an mp4.

    Video: H.264 (libx264, yuv420p, constant quality ``crf``), ``fps`` frames per second; odd sizes get one edge
    row/column more. Audio: AAC at ``sample_rate`` if AAC supports it (16 kHz does), else resampled to 48 kHz;
    padded with silence / cut to the video duration (see the module docstring). ``progress(frames_done, total)``
    is called while encoding (an exception raised from it aborts cleanly). An existing ``path`` is replaced only
    with ``overwrite``; otherwise outpaths.OutputPathError (an OviInputError) and nothing is written. Returns what
    was written.
    """
    import av

    path = Path(path)
    if not (isinstance(fps, (int, float, Fraction)) and not isinstance(fps, bool) and 0 < fps <= 1000):
        raise OviInputError(f"fps must be a number between 0 and 1000, got {fps!r}")
    if not (isinstance(crf, int) and not isinstance(crf, bool) and 0 <= crf <= 51):
        raise OviInputError(f"crf must be a whole number from 0 (lossless) to 51 (worst), got {crf!r}; 18 looks "
                            "visually lossless, 23 is x264's default")
    if not path.parent.is_dir():
        raise OviInputError(f"cannot write {path}: the folder {path.parent} does not exist")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputPathError(f"{path} exists already; pass overwrite=True (--overwrite) to replace it, or choose "
                            "another name")
    video = even_size(frames_to_uint8(frames))
    num_frames, height, width, _ = video.shape
    rate = Fraction(fps).limit_denominator(1001)

    wave, note = None, None
    if audio is not None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise OviInputError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
        wave = audio_to_numpy(audio)
        if sample_rate not in AAC_SAMPLE_RATES:
            logger.info("AAC cannot store %d Hz; resampling the audio to %d Hz", sample_rate, FALLBACK_SAMPLE_RATE)
            import torch  # only here: the rest of this module works on numpy without torch

            from ovi_core.audio_resample import resample_audio

            wave = resample_audio(torch.from_numpy(wave), sample_rate, FALLBACK_SAMPLE_RATE).numpy()
            sample_rate = FALLBACK_SAMPLE_RATE
        wave, note = align_audio_to_video(wave, sample_rate, num_frames, float(rate))

    tmp = partial_path(path)
    try:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart+use_metadata_tags"}) as out:
            for key, value in (metadata or {}).items():
                out.metadata[key] = str(value)
            vs = out.add_stream("libx264", rate=rate, options={"crf": str(int(crf)), "preset": preset,
                                                               "x264-params": X264_PARAMS})
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            astream = None
            if wave is not None:
                layout = "mono" if wave.shape[0] == 1 else "stereo"
                astream = out.add_stream("aac", rate=sample_rate, layout=layout)
            for i in range(num_frames):
                interrupt.check("writing the mp4")
                frame = av.VideoFrame.from_ndarray(video[i], format="rgb24")
                frame.pts = i
                out.mux(vs.encode(frame))
                if progress is not None:
                    progress(i + 1, num_frames)
            out.mux(vs.encode(None))
            if astream is not None:
                aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave), format="fltp", layout=layout)
                aframe.sample_rate, aframe.pts = sample_rate, 0
                out.mux(astream.encode(aframe))
                out.mux(astream.encode(None))
        publish(tmp, path, overwrite=overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.debug("wrote %s: %d frames %dx%d at %g fps (%.3f s)%s", path, num_frames, width, height, float(rate),
                num_frames / float(rate),
                "" if note is None else f", audio {sample_rate} Hz {note.samples_out / sample_rate:.3f} s"
                + (f" (+{note.padded} samples of silence)" if note.padded else ""))
    return Mp4Info(path=path, video_streams=1, audio_streams=int(wave is not None), video_codec="h264",
                   audio_codec="aac" if wave is not None else None, width=width, height=height, fps=float(rate),
                   num_frames=num_frames, video_duration=num_frames / float(rate),
                   audio_duration=0.0 if note is None else note.samples_out / sample_rate,
                   sample_rate=sample_rate if wave is not None else 0,
                   audio_channels=0 if wave is None else wave.shape[0], pix_fmt="yuv420p")


# ---- reading back ----------------------------------------------------------------------------------------------
def _open(path: Path):
    import av

    if not path.is_file():
        raise WrongFileError(f"{path} does not exist")
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise WrongFileError(f"{path} is not a readable video file ({exc})") from None


def probe_mp4(path: str | os.PathLike, count_frames: bool = True) -> Mp4Info:
    """Streams, codecs, size, frame count (decoded when ``count_frames``) and durations from the container."""
    path = Path(path)
    with _open(path) as c:
        vstreams, astreams = list(c.streams.video), list(c.streams.audio)
        v = vstreams[0] if vstreams else None
        a = astreams[0] if astreams else None

        def seconds(s) -> float:
            return float(s.duration * s.time_base) if s is not None and s.duration else 0.0

        num_frames = (v.frames or 0) if v is not None else 0
        if v is not None and count_frames:
            num_frames = sum(1 for _ in c.decode(video=0))
        return Mp4Info(
            path=path,
            video_streams=len(vstreams),
            audio_streams=len(astreams),
            video_codec=v.codec_context.name if v is not None else None,
            audio_codec=a.codec_context.name if a is not None else None,
            width=v.codec_context.width if v is not None else 0,
            height=v.codec_context.height if v is not None else 0,
            fps=float(v.average_rate) if v is not None and v.average_rate else 0.0,
            num_frames=num_frames,
            video_duration=seconds(v),
            audio_duration=seconds(a),
            sample_rate=a.codec_context.sample_rate if a is not None else 0,
            audio_channels=a.codec_context.channels if a is not None else 0,
            pix_fmt=v.codec_context.pix_fmt if v is not None else None,
        )


def read_mp4(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Decode a whole clip: frames uint8 [T, H, W, 3], audio float32 [C, N] (None without audio), sample rate."""
    path = Path(path)
    with _open(path) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    audio, sr = None, 0
    with _open(path) as c:
        if c.streams.audio:
            sr = c.streams.audio[0].codec_context.sample_rate
            chunks = [f.to_ndarray() for f in c.decode(audio=0)]
            audio = np.concatenate(chunks, axis=1).astype(np.float32) if chunks else np.zeros((1, 0), np.float32)
    return frames, audio, sr
