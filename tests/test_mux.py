"""ovi_core.mux: the mp4 writer (H.264 + AAC, audio aligned to the video, atomic) and its read-back helpers."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ovi_core.errors import OviInputError
from ovi_core.mux import align_audio_to_video, probe_mp4, read_mp4, write_mp4

FPS, SR = 24, 16000
FRAME = 1.0 / FPS


def _clip(frames=121, h=64, w=64, samples=80384, seed=0):
    """A moving gradient (compresses well, so decoded pixels stay close) and a 440 Hz tone."""
    t = np.arange(frames)[:, None, None, None]
    y = np.linspace(0, 1, h)[None, :, None, None]
    x = np.linspace(0, 1, w)[None, None, :, None]
    c = np.array([0.0, 0.33, 0.66])[None, None, None, :]
    video = (0.5 + 0.5 * np.sin(2 * np.pi * (x + y + c + t / 48.0))).astype(np.float32)
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / SR)).astype(np.float32)[None]
    return video, audio


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or "partial" in p.name]


def test_the_alignment_rule_in_numbers():
    # 121 frames at 24 fps last 5.042 s; Ovi's 157 audio latents decode to 80,384 samples = 5.024 s
    audio = np.zeros((1, 80384), np.float32)
    aligned, note = align_audio_to_video(audio, SR, 121, FPS)
    assert aligned.shape == (1, 80667)  # round(121 / 24 * 16000)
    assert (note.padded, note.trimmed) == (283, 0)
    assert abs(aligned.shape[1] / SR - 121 / FPS) < 1 / SR


def test_longer_audio_is_cut_only_beyond_the_last_frame_and_said(caplog):
    audio = np.ones((1, 90000), np.float32)
    with caplog.at_level(logging.WARNING, logger="ovi_core.mux"):
        aligned, note = align_audio_to_video(audio, SR, 121, FPS)
    assert aligned.shape[1] == 80667 and note.trimmed == 90000 - 80667
    assert "longer than the video" in caplog.text


def test_ovi_clip_round_trip(tmp_path):
    video, audio = _clip()
    path = tmp_path / "clip.mp4"
    written = write_mp4(path, video, FPS, audio, SR)
    info = probe_mp4(path)
    assert (info.video_streams, info.audio_streams) == (1, 1)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert (info.num_frames, info.width, info.height, info.fps) == (121, 64, 64, 24.0)
    assert info.sample_rate == SR and info.audio_channels == 1  # AAC stores 16 kHz as is
    assert abs(info.video_duration - 121 / FPS) < 1e-6
    assert abs(info.audio_duration - info.video_duration) < FRAME  # the rule
    assert abs(written.audio_duration - info.video_duration) < 1 / SR
    frames, decoded, sr = read_mp4(path)
    assert frames.shape == (121, 64, 64, 3) and sr == SR
    assert np.abs(frames.astype(np.float32) / 255 - video).mean() < 0.03  # lossy, but the same picture
    n = int(round(5.024 * SR))
    assert decoded.shape[1] >= n  # no audio was lost (AAC adds at most one frame of padding)
    assert abs(decoded[0, 1000:n - 1000] - audio[0, 1000:n - 1000]).max() < 0.05
    assert _leftovers(tmp_path) == []


def test_torch_uint8_frames_stereo_audio_and_no_audio(tmp_path):
    video, audio = _clip(frames=9, samples=6000)
    frames = torch.from_numpy((video * 255).round().astype(np.uint8))
    info = write_mp4(tmp_path / "a.mp4", frames, FPS, torch.from_numpy(np.concatenate([audio, audio])), SR)
    assert probe_mp4(tmp_path / "a.mp4").audio_channels == 2 and info.num_frames == 9
    write_mp4(tmp_path / "b.mp4", frames, FPS)
    got = probe_mp4(tmp_path / "b.mp4")
    assert (got.video_streams, got.audio_streams, got.num_frames) == (1, 0, 9)


def test_odd_sizes_are_padded_to_even_and_said(tmp_path, caplog):
    video, _ = _clip(frames=5, h=63, w=65)
    with caplog.at_level(logging.WARNING, logger="ovi_core.mux"):
        write_mp4(tmp_path / "odd.mp4", video, FPS)
    info = probe_mp4(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (66, 64)
    assert "odd" in caplog.text


def test_a_rate_aac_cannot_store_is_resampled(tmp_path):
    video, _ = _clip(frames=24)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(22000) / 22000)).astype(np.float32)[None]
    write_mp4(tmp_path / "r.mp4", video, FPS, tone, 22000)
    info = probe_mp4(tmp_path / "r.mp4")
    assert info.sample_rate == 48000
    assert abs(info.audio_duration - info.video_duration) < FRAME


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_write_leaves_nothing_and_keeps_the_old_file(tmp_path, exc):
    video, audio = _clip(frames=30, samples=20000)
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"previous result")

    def stop(done, total):
        if done == 10:
            raise exc("stop")

    with pytest.raises(exc):
        write_mp4(path, video, FPS, audio, SR, progress=stop, overwrite=True)
    assert path.read_bytes() == b"previous result"
    assert _leftovers(tmp_path) == []


def test_bad_inputs_are_refused(tmp_path):
    video, audio = _clip(frames=3)
    with pytest.raises(OviInputError, match="frames must be"):
        write_mp4(tmp_path / "x.mp4", video[..., :2], FPS)
    with pytest.raises(OviInputError, match="NaN"):
        write_mp4(tmp_path / "x.mp4", np.full_like(video, np.nan), FPS)
    with pytest.raises(OviInputError, match="audio must be"):
        write_mp4(tmp_path / "x.mp4", video, FPS, np.zeros((3, 3, 100), np.float32), SR)
    with pytest.raises(OviInputError, match="does not exist"):
        write_mp4(tmp_path / "missing" / "x.mp4", video, FPS)
    with pytest.raises(OviInputError, match="fps"):
        write_mp4(tmp_path / "x.mp4", video, 0)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_with_overwrite(tmp_path):
    video, audio = _clip(frames=3)
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"previous result")
    with pytest.raises(OviInputError, match="exists already"):
        write_mp4(path, video, FPS, audio, SR)
    assert path.read_bytes() == b"previous result" and _leftovers(tmp_path) == []
    assert write_mp4(path, video, FPS, audio, SR, overwrite=True).num_frames == 3
    assert probe_mp4(path).num_frames == 3 and _leftovers(tmp_path) == []


def test_a_file_that_appears_while_writing_is_not_replaced(tmp_path):
    video, audio = _clip(frames=20)
    path = tmp_path / "clip.mp4"

    def another_run_finishes_first(done, total):
        if done == 5:
            path.write_bytes(b"the other run's clip")

    with pytest.raises(OviInputError, match="appeared while this clip was being written"):
        write_mp4(path, video, FPS, audio, SR, progress=another_run_finishes_first)
    assert path.read_bytes() == b"the other run's clip" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("crf", [-1, 52, 100, 18.5, True])
def test_crf_outside_0_to_51_is_refused(tmp_path, crf):
    video, _ = _clip(frames=3)
    with pytest.raises(OviInputError, match="crf must be a whole number from 0"):
        write_mp4(tmp_path / "x.mp4", video, FPS, crf=crf)
    assert list(tmp_path.iterdir()) == []


def test_muxing_stops_at_an_interrupt_check(tmp_path):
    from ovi_core import interrupt
    from ovi_core.errors import OviInterrupted

    video, audio = _clip(frames=30)
    calls = []

    def stop_after_ten_frames():
        calls.append(1)
        return len(calls) > 10

    with interrupt.checking(stop_after_ten_frames), pytest.raises(OviInterrupted, match="writing the mp4"):
        write_mp4(tmp_path / "x.mp4", video, FPS, audio, SR)
    assert len(calls) == 11 and list(tmp_path.iterdir()) == []


def test_metadata_lands_in_the_file(tmp_path):
    # ComfyUI's prompt/workflow (and our demo notice) must be readable from the mp4, as core SaveVideo's are: the mp4
    # muxer writes arbitrary keys only with use_metadata_tags
    import av

    video, audio = _clip(frames=3, samples=2000)
    out = tmp_path / "meta.mp4"
    write_mp4(out, video, 24, audio, 16000, metadata={"workflow": '{"nodes": []}', "prompt": '{"1": {}}',
                                                      "comment": "DEMO"})
    with av.open(str(out)) as c:
        meta = dict(c.metadata)
    assert meta["workflow"] == '{"nodes": []}' and meta["prompt"] == '{"1": {}}' and meta["comment"] == "DEMO"
