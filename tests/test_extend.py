"""Ovi Extend / Ovi Join Clips (nodes/extend_nodes.py) called directly (no ComfyUI needed; the demo video VAE).

Proves: the seam arithmetic (frames repeated, video latents and audio latents held, the audio's offset) for 5 s and
10 s windows; the next window's latent holds the re-encoded last frames and the previous audio from the seam on bit
for bit, with the matching noise masks; joining W windows gives exactly sum(frames) − (W−1)(4m+1) frames and
sum(samples) − the overlaps, the repeated frames once, the next sound at its video's time, the cross-fade exact; bad
input (an overlap as long as the window, a single image where frames are expected, mismatched sample rates) is
refused with a message.
"""

from __future__ import annotations

import logging

import pytest
import torch

from nodes import extend_nodes as ext
from nodes.bridge import DEMO_ENTRY
from ovi_core.errors import OviInputError

FRAMES_5S, V5, A5 = 121, 31, 157
SAMPLES_5S = 512 * A5  # 80384 samples at 16 kHz


@pytest.mark.parametrize("video, audio, overlap, expected", [
    (V5, A5, 1.0, (25, 7, 96, 125, 32, 0.0)),  # 5 s windows, 1 s: 4 s apart = 125 audio latents exactly
    (V5, A5, 0.0, (1, 1, 120, 156, 1, -8.0)),  # last frame only: 156.25 latents -> 156, the held one 8 ms early
    (V5, A5, 0.5, (13, 4, 108, 141, 16, 12.0)),
    (61, 314, 2.0, (49, 13, 192, 250, 64, 0.0)),  # 10 s windows, 2 s: 8 s apart = 250 latents exactly
    (61, 314, 1.0, (25, 7, 216, 281, 33, -8.0)),
])
def test_seam_arithmetic(video, audio, overlap, expected):
    s = ext.plan_seam(video, audio, overlap)
    assert (s.kept_frames, s.kept_latents, s.advance_frames, s.audio_shift, s.held_audio,
            round(s.audio_offset_ms, 6)) == expected
    assert s.kept_frames + s.advance_frames == 4 * (video - 1) + 1


def test_overlap_as_long_as_the_window_is_refused():
    with pytest.raises(OviInputError, match=r"overlap 5 s is as long as the window itself \(121 frames = 5.04 s\).*"
                                            r"at most 4.5 s"):
        ext.plan_seam(V5, A5, 5.0)
    with pytest.raises(OviInputError, match="overlap must be a number of seconds"):
        ext.plan_seam(V5, A5, float("nan"))


def test_overlap_off_the_grid_is_snapped_and_logged(caplog):
    with caplog.at_level(logging.WARNING):
        assert ext.plan_seam(V5, A5, 0.8) == ext.plan_seam(V5, A5, 1.0)
    assert "overlap 0.8 s is not a multiple of 0.5 s; using 1.0 s" in caplog.text


@pytest.fixture(scope="module")
def vae():
    from nodes.loaders import OviVideoVAELoader

    return OviVideoVAELoader.execute(vae_name=DEMO_ENTRY, precision="auto")[0]


def _previous_window(h=4, w=4):
    g = torch.Generator().manual_seed(3)
    video = torch.randn(1, 48, V5, h, w, generator=g)
    audio = torch.randn(1, 20, A5, generator=g)
    images = torch.rand(FRAMES_5S, h * 16, w * 16, 3, generator=g)
    return {"samples": ext.bridge.nested((video, audio))}, images


def test_extend_holds_the_last_frames_and_the_sound_after_the_seam(vae):
    from nodes.convert import video_latent_to_comfy

    latent, images = _previous_window()
    (out,) = ext.OviExtend.execute(latent=latent, images=images, video_vae=vae, overlap=1.0).args
    video, audio = out["samples"].unbind()
    prev_video, prev_audio = latent["samples"].unbind()
    assert video.shape == prev_video.shape and audio.shape == prev_audio.shape
    # video: the last 25 frames encoded again (frame 0 alone, then 4 per latent) = the first 7 latents
    tail = (images[-25:] * 2 - 1).permute(3, 0, 1, 2).unsqueeze(0)
    expected = video_latent_to_comfy(vae.acquire().encode(tail), video.device)["samples"]
    assert torch.equal(video[:, :, :7], expected) and torch.equal(video[:, :, 7:], torch.zeros_like(video[:, :, 7:]))
    # audio: the previous window's latents 125..156 at steps 0..31, bit for bit
    assert torch.equal(audio[:, :, :32], prev_audio[:, :, 125:])
    assert not audio[:, :, 32:].any()
    vmask, amask = out["noise_mask"].unbind()
    assert vmask.shape == (1, 1, V5, 4, 4) and amask.shape == (1, 1, A5)
    assert not vmask[:, :, :7].any() and bool((vmask[:, :, 7:] == 1).all())
    assert not amask[:, :, :32].any() and bool((amask[:, :, 32:] == 1).all())


def test_extend_bad_inputs(vae):
    latent, images = _previous_window()
    with pytest.raises(OviInputError, match="images holds a single image, but the overlap repeats the previous "
                                            "window's last 25 frames"):
        ext.OviExtend.execute(latent=latent, images=images[-1:], video_vae=vae, overlap=1.0)
    (out,) = ext.OviExtend.execute(latent=latent, images=images[-1:], video_vae=vae, overlap=0.0).args  # fine: 1 frame
    assert not out["noise_mask"].unbind()[0][:, :, :1].any()
    with pytest.raises(OviInputError, match="as long as the window"):
        ext.OviExtend.execute(latent=latent, images=images, video_vae=vae, overlap=9.5)
    with pytest.raises(OviInputError, match="joint audio\\+video LATENT"):
        ext.OviExtend.execute(latent={"samples": torch.zeros(1, 48, V5, 4, 4)}, images=images, video_vae=vae,
                              overlap=1.0)
    with pytest.raises(OviInputError, match="images are 32x32 but the latent is 64x64"):
        ext.OviExtend.execute(latent=latent, images=images[:, :32, :32], video_vae=vae, overlap=1.0)


def _window(k: int, frames=FRAMES_5S, samples=SAMPLES_5S, rate=16000, side=8):
    g = torch.Generator().manual_seed(100 + k)
    return torch.rand(frames, side, side, 3, generator=g), {"waveform": torch.randn(1, 1, samples, generator=g),
                                                            "sample_rate": rate}


@pytest.mark.parametrize("overlap, rate, samples", [(1.0, 16000, SAMPLES_5S), (0.0, 16000, SAMPLES_5S),
                                                    (1.0, 44100, 221558), (0.5, 48000, 241152)])
def test_join_three_windows_exact_lengths(overlap, rate, samples):
    windows = [_window(k, samples=samples, rate=rate) for k in range(3)]
    kept = 4 * ext.overlap_latents(overlap) + 1
    advance = (FRAMES_5S - kept) * rate // 24
    images, audio = windows[0]
    for nxt_images, nxt_audio in windows[1:]:
        images, audio = ext.OviJoinClips.execute(images=images, audio=audio, next_images=nxt_images,
                                                 next_audio=nxt_audio, overlap=overlap).args
    overlap_samples = samples - advance
    assert images.shape[0] == 3 * FRAMES_5S - 2 * kept
    assert audio["waveform"].shape == (1, 1, 3 * samples - 2 * overlap_samples) and audio["sample_rate"] == rate
    # frames: window 0 whole, then each next window without its repeated head
    assert torch.equal(images[:FRAMES_5S], windows[0][0])
    assert torch.equal(images[FRAMES_5S: 2 * FRAMES_5S - kept], windows[1][0][kept:])
    assert torch.equal(images[-(FRAMES_5S - kept):], windows[2][0][kept:])
    # sound: window k starts at its first frame's time (k·advance frames), outside the overlaps it is untouched
    wave = audio["waveform"]
    for k, (_, a) in enumerate(windows):
        start = k * advance
        lo = overlap_samples if k else 0
        hi = samples - (overlap_samples if k < 2 else 0)
        assert torch.equal(wave[:, :, start + lo: start + hi], a["waveform"][:, :, lo:hi]), k


def test_join_cross_fade_of_identical_sound_is_that_sound():
    """Where both windows hold the same sound (the held audio decoded twice), the cross-fade gives it back."""
    images, audio = _window(0)
    nxt_images, nxt_audio = _window(1)
    overlap_samples = SAMPLES_5S - 96 * 16000 // 24  # 16384
    nxt_audio["waveform"][:, :, :overlap_samples] = audio["waveform"][:, :, -overlap_samples:]
    _, joined = ext.join_clips(images, audio, nxt_images, nxt_audio, 1.0)
    seam = slice(SAMPLES_5S - overlap_samples, SAMPLES_5S)
    assert torch.allclose(joined["waveform"][:, :, seam], audio["waveform"][:, :, -overlap_samples:], atol=1e-6)


def test_join_bad_inputs():
    images, audio = _window(0)
    nxt_images, nxt_audio = _window(1)
    with pytest.raises(OviInputError, match="next_images holds a single image; the overlap repeats 25 frames"):
        ext.join_clips(images, audio, nxt_images[:1], nxt_audio, 1.0)
    with pytest.raises(OviInputError, match="different sample rates \\(16000 and 44100 Hz\\)"):
        ext.join_clips(images, audio, nxt_images, {**nxt_audio, "sample_rate": 44100}, 1.0)
    with pytest.raises(OviInputError, match="the clips differ in size"):
        ext.join_clips(images, audio, nxt_images[:, :4], nxt_audio, 1.0)
    with pytest.raises(OviInputError, match="shorter than its window's new video"):
        ext.join_clips(images, audio, nxt_images, {**nxt_audio, "waveform": nxt_audio["waveform"][:, :, :1000]}, 1.0)


def test_extend_with_core_vae_or_none(vae):
    """core VAELoader's VAE takes IMAGE pixels and returns the raw latent; without any VAE: a message."""
    from nodes.convert import video_latent_to_comfy

    latent, images = _previous_window()

    class CoreVAE:  # what core's VAE.encode does for Wan2.2: IMAGE [T, H, W, 3] -> raw [1, 48, 1 + (T-1)/4, h, w]
        def encode(self, pixels):
            frames = (pixels * 2 - 1).permute(3, 0, 1, 2).unsqueeze(0)
            return video_latent_to_comfy(vae.acquire().encode(frames), "cpu")["samples"]

    (ours,) = ext.OviExtend.execute(latent=latent, images=images, overlap=1.0, video_vae=vae).args
    (core,) = ext.OviExtend.execute(latent=latent, images=images, overlap=1.0, vae=CoreVAE()).args
    assert torch.allclose(core["samples"].unbind()[0], ours["samples"].unbind()[0], atol=1e-5)

    class WrongVAE:
        def encode(self, pixels):
            return torch.zeros(1, 16, 7, 4, 4)

    with pytest.raises(OviInputError, match="not a Wan2.2 latent"):
        ext.OviExtend.execute(latent=latent, images=images, overlap=1.0, vae=WrongVAE())
    with pytest.raises(OviInputError, match="needs a video VAE"):
        ext.OviExtend.execute(latent=latent, images=images, overlap=1.0)
