"""Video -> audio and audio -> video nodes (nodes/av_nodes.py) called directly, on the demo model, inside ComfyUI's venv.

Runs only where ComfyUI imports (its venv with its tree on PYTHONPATH); elsewhere the module is skipped:
    PYTHONPATH=/path/to/ComfyUI:. /path/to/comfy_venv/bin/python -m pytest -q tests/test_av_nodes.py
Proves: the held modality comes out of SamplerCustomAdvanced + Ovi Guider bit for bit (torch.equal) while the other
one is generated (and differs from a plain text-to-clip run: the held part is in view); the frame-grid rule (nearest
frame in time, last frame repeated, end cut) and the audio rule (mono mix, 16 kHz, end trimmed/padded); bad input
gets a clear message or a logged adaptation.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from ovi_core.audio_input import prepare_audio
from ovi_core.demo import build_demo_audio_encoder
from ovi_core.errors import OviInputError
from ovi_core.media import is_original_size
from tests import comfy_inproc  # skips this module where ComfyUI is not importable

_load_nodes_module, _one, _out = comfy_inproc.load_nodes_module, comfy_inproc.one, comfy_inproc.out
nn = _load_nodes_module("native_nodes")  # first: it imports av_nodes at its end (as the pack's __init__ does)
av = _load_nodes_module("av_nodes")
native = _load_nodes_module("native_model")
loaders = _load_nodes_module("loaders")
bridge = _load_nodes_module("bridge")
handles = _load_nodes_module("handles")

SIDE, STEPS, SEED = 64, 4, 7
DEMO = bridge.DEMO_ENTRY


@pytest.fixture(scope="module")
def custom_sampler():
    """Core's SamplerCustomAdvanced (comfy_extras/nodes_custom_sampler.py)."""
    _, module = comfy_inproc.load_core("comfy_extras/nodes_custom_sampler.py")
    return module


@pytest.fixture(scope="module")
def video_vae():
    return _one(loaders.OviVideoVAELoader.execute(vae_name=DEMO, precision="auto"))


@pytest.fixture(scope="module")
def audio_vae():
    return _one(loaders.OviAudioVAELoader.execute(vae_name=DEMO, vocoder_name=DEMO))


def _clip(frames=40, h=50, w=70, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(frames, h, w, 3, generator=g)


def _sound(channels=2, rate=44100, seconds=3.0, batch=1, seed=4):
    g = torch.Generator().manual_seed(seed)
    n = int(rate * seconds)
    t = torch.arange(n) / rate
    wave = 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.05 * torch.randn(batch, channels, n, generator=g)
    return {"waveform": wave.float(), "sample_rate": rate}


def _sample(fusion, texts, custom_sampler, latent):
    model = native.build_model_patcher(fusion, slg_layer=1)
    guider = _one(nn.OviGuider.execute(model=model, positive=[[texts.positive[None], {}]],
                                       negative=[[texts.video_negative[None], {}]], video_cfg=4.0, audio_cfg=3.0,
                                       skip_layer=1, audio_negative=[[texts.audio_negative[None], {}]]))
    noise = _one(nn.OviNoise.execute(seed=SEED, add_noise=True))
    sigmas = _one(nn.OviScheduler.execute(solver="unipc", steps=STEPS, shift=5.0))
    sampler = _one(nn.OviSamplerSelect.execute(solver="unipc"))
    out, _ = _out(custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent))
    return out["samples"].unbind()


@pytest.fixture(scope="module")
def text_to_clip(fusion, texts, custom_sampler):
    """The plain text -> clip generation with the same seed (what a held part must change)."""
    return _sample(fusion, texts, custom_sampler, _one(nn.OviEmptyLatent.execute(width=SIDE, height=SIDE, length=5,
                                                                                 batch_size=1)))


# ---- schemas -------------------------------------------------------------------------------------------------------
def test_schemas_are_registered_with_tooltips():
    ids = [cls.define_schema().node_id for cls in nn.NATIVE_NODES]
    assert {"OviAudioEncode", "OviVideoToAudio", "OviAVLatentFromParts"} <= set(ids) and len(ids) == len(set(ids))
    for cls in av.AV_NODES:
        schema = cls.define_schema()
        assert schema.display_name.startswith("Ovi ") and schema.description and schema.category.startswith("Ovi/")
        assert all(s.tooltip for s in schema.inputs) and all(s.tooltip for s in schema.outputs)


# ---- the frame grid ------------------------------------------------------------------------------------------------
def test_frame_grid_rule():
    assert av.frame_grid(121, 24.0, 121) == (list(range(121)), 0, 0)  # Ovi's own grid: identity
    index, padded, cut = av.frame_grid(300, 30.0, 121)  # 10 s at 30 fps: nearest frame, the rest cut
    assert index == [math.floor(i * 30 / 24 + 0.5) for i in range(121)] and index[:6] == [0, 1, 3, 4, 5, 6]
    assert padded == 0 and cut == 300 - 1 - 150
    index, padded, cut = av.frame_grid(30, 12.0, 121)  # 2.5 s at 12 fps: each frame twice, then the last repeated
    assert index[:6] == [0, 1, 1, 2, 2, 3] and index[-1] == 29 and padded == 121 - 59 and cut == 0
    index, _, _ = av.frame_grid(500, 23.976, 121)
    assert index[120] == round(120 * 23.976 / 24)


def test_video_to_audio_fits_frames_and_logs(video_vae, caplog):
    frames = _clip(frames=30)
    with caplog.at_level(logging.INFO):
        latent, shown = _out(av.OviVideoToAudio.execute(video_vae=video_vae, images=frames, fps=12.0, width=SIDE,
                                                        height=SIDE, length=5))
    assert "30 frames at 12 fps (2.500 s) -> 121 frames at 24 fps" in caplog.text
    assert "last frame repeated 62 times" in caplog.text
    assert shown.shape == (121, SIDE, SIDE, 3)
    video, audio = latent["samples"].unbind()
    vm, am = latent["noise_mask"].unbind()
    assert video.shape == (1, 48, 31, 4, 4) and audio.shape == (1, 20, 157)
    assert not vm.any() and bool((am == 1).all())
    # the grid frames are the source frames, each sized as a start image (ovi_core.media): 64x64 is the size
    # Ovi's own rule gives a 50x70 picture at 64x64's area, so the frames are resized whole (bicubic, no antialias)
    assert is_original_size(50, 70, SIDE, SIDE)
    grid = frames[[0, 1, 1, 2]].permute(0, 3, 1, 2) * 2 - 1
    ref = F.interpolate(grid, size=(SIDE, SIDE), mode="bicubic", align_corners=False)
    assert torch.equal(((ref + 1) * 0.5).clamp(0, 1).permute(0, 2, 3, 1), shown[:4])
    assert torch.equal(shown[-1], shown[60])  # repeated last frame


# ---- held modalities through SamplerCustomAdvanced + Ovi Guider ----------------------------------------------------
def test_video_to_audio_keeps_the_video_bit_for_bit(fusion, texts, custom_sampler, video_vae, text_to_clip):
    latent, _ = _out(av.OviVideoToAudio.execute(video_vae=video_vae, images=_clip(), fps=25.0, width=SIDE,
                                                height=SIDE, length=5))
    video_in = latent["samples"].unbind()[0].clone()
    video, audio = _sample(fusion, texts, custom_sampler, latent)
    assert torch.equal(video, video_in)
    gap = (audio - text_to_clip[1]).abs().max().item()
    print(f"V2A: video bit-equal; audio differs from text-to-clip by {gap:.3g}")
    assert gap > 1e-3 and torch.isfinite(audio).all() and audio.abs().max() > 0.1


def test_audio_to_video_keeps_the_audio_bit_for_bit(fusion, texts, custom_sampler, audio_vae, text_to_clip):
    audio_latent = _one(av.OviAudioEncode.execute(audio_vae=audio_vae, audio=_sound(), length=5))
    latent = _one(av.OviAVLatentFromParts.execute(width=SIDE, height=SIDE, length=5, keep_video=False,
                                                  keep_audio=True, audio=audio_latent))
    audio_in = latent["samples"].unbind()[1].clone()
    assert torch.equal(audio_in, audio_latent["samples"])
    video, audio = _sample(fusion, texts, custom_sampler, latent)
    assert torch.equal(audio, audio_in)
    gap = (video - text_to_clip[0]).abs().max().item()
    print(f"A2V: audio bit-equal; video differs from text-to-clip by {gap:.3g}")
    assert gap > 1e-3 and torch.isfinite(video).all()


def test_audio_to_video_with_a_start_image_keeps_frame_0_and_the_audio(fusion, texts, custom_sampler, audio_vae,
                                                                     video_vae):
    audio_latent = _one(av.OviAudioEncode.execute(audio_vae=audio_vae, audio=_sound(channels=1, rate=48000),
                                                  length=5))
    latent = _one(av.OviAVLatentFromParts.execute(width=SIDE, height=SIDE, length=5, keep_video=False,
                                                  keep_audio=True, audio=audio_latent, start_image=_clip(1),
                                                  video_vae=video_vae))
    vm, am = latent["noise_mask"].unbind()
    assert not vm[:, :, 0].any() and bool((vm[:, :, 1:] == 1).all()) and not am.any()
    video_in, audio_in = (t.clone() for t in latent["samples"].unbind())
    video, audio = _sample(fusion, texts, custom_sampler, latent)
    assert torch.equal(audio, audio_in) and torch.equal(video[:, :, :1], video_in[:, :, :1])
    assert (video[:, :, 1:] - video_in[:, :, 1:]).abs().max() > 1e-3


# ---- Ovi Audio Encode: the audio rule ------------------------------------------------------------------------------
@pytest.mark.parametrize("channels, rate, seconds", [(2, 44100, 3.0), (2, 48000, 7.5), (1, 16000, 5.024),
                                                     (6, 22050, 1.0)])
def test_audio_encode_mixes_resamples_and_fits(audio_vae, channels, rate, seconds, caplog):
    sound = _sound(channels, rate, seconds, batch=2)
    with caplog.at_level(logging.INFO):
        latent = _one(av.OviAudioEncode.execute(audio_vae=audio_vae, audio=sound, length=5))
    assert latent["samples"].shape == (2, 20, 157) and latent["type"] == "audio"
    enc = build_demo_audio_encoder()
    ref = enc.encode(torch.stack([prepare_audio(w, rate, 157 * 512) for w in sound["waveform"]]))
    assert torch.allclose(latent["samples"], ref, atol=1e-5)
    assert f"{channels} channel" in caplog.text
    if seconds > 5.1:
        assert "cut from the end" in caplog.text
    elif seconds < 5:
        assert "of silence added at the end" in caplog.text


def test_audio_encode_warns_on_silence_and_refuses_bad_audio(audio_vae, caplog):
    silent = {"waveform": torch.zeros(1, 2, 48000), "sample_rate": 48000}
    with caplog.at_level(logging.WARNING):
        latent = _one(av.OviAudioEncode.execute(audio_vae=audio_vae, audio=silent, length=5))
    assert "silent" in caplog.text and torch.isfinite(latent["samples"]).all()
    with pytest.raises(OviInputError, match="sample rate"):
        av.OviAudioEncode.execute(audio_vae=audio_vae, audio={"waveform": torch.zeros(1, 1, 100), "sample_rate": 0},
                                  length=5)
    with pytest.raises(OviInputError, match="AUDIO"):
        av.OviAudioEncode.execute(audio_vae=audio_vae, audio=torch.zeros(1, 1, 100), length=5)
    with pytest.raises(OviInputError, match="length 7"):
        av.OviAudioEncode.execute(audio_vae=audio_vae, audio=silent, length=7)
    nan = {"waveform": torch.full((1, 1, 16000), float("nan")), "sample_rate": 16000}
    with pytest.raises(OviInputError, match="NaN"):
        av.OviAudioEncode.execute(audio_vae=audio_vae, audio=nan, length=5)


def test_audio_vae_without_encoder_and_the_file_based_demo_encoder(tmp_path):
    from ovi_core.demo import write_demo_checkpoints

    bare = handles.OviAudioVAEHandle(object(), "x", bridge.devices_for("vae"))
    with pytest.raises(OviInputError, match="without a file to take the encoder from"):
        bare.acquire_encoder()
    write_demo_checkpoints(tmp_path, "comfy")
    from_file = handles.OviAudioVAEHandle(object(), "file", bridge.devices_for("vae"),
                                          str(tmp_path / "vae" / "mmaudio_vae_16k_fp32.safetensors"))
    wave = _sound(1, 16000, 5.024)["waveform"][:, 0, : 157 * 512]
    assert torch.equal(from_file.acquire_encoder().encode(wave), build_demo_audio_encoder().encode(wave))


# ---- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("images, fps, words", [
    (_clip(1), 24.0, "single image"),
    (torch.zeros(0, 8, 8, 3), 24.0, "no frames"),
    (torch.zeros(8, 8, 3), 24.0, "IMAGE batch of frames"),
    (_clip(5), 0.0, "fps must be"),
    (_clip(5), float("nan"), "fps must be"),
    (_clip(5), -3.0, "fps must be"),
])
def test_video_to_audio_refuses_bad_frames(video_vae, images, fps, words):
    with pytest.raises(OviInputError, match=words):
        av.OviVideoToAudio.execute(video_vae=video_vae, images=images, fps=fps, width=SIDE, height=SIDE, length=5)


def test_over_long_clip_is_cut_and_logged(video_vae, caplog):
    with caplog.at_level(logging.WARNING):
        latent, shown = _out(av.OviVideoToAudio.execute(video_vae=video_vae, images=_clip(400, 16, 16), fps=60.0,
                                                        width=SIDE, height=SIDE, length=5))
    assert "400 source frames" not in caplog.text and "source frames (" in caplog.text and "cut" in caplog.text
    assert shown.shape[0] == 121 and latent["samples"].unbind()[0].shape[2] == 31


def test_parts_refuse_inconsistent_input(audio_vae):
    audio_latent = {"samples": torch.zeros(1, 20, 157), "type": "audio"}
    with pytest.raises(OviInputError, match="keep_video is on but no video"):
        av.OviAVLatentFromParts.execute(width=SIDE, height=SIDE, length=5, keep_video=True, keep_audio=True,
                                        audio=audio_latent)
    with pytest.raises(OviInputError, match="keep_audio is on but no audio"):
        av.OviAVLatentFromParts.execute(width=SIDE, height=SIDE, length=5, keep_video=False, keep_audio=True)
    with pytest.raises(OviInputError, match=r"needs \[batch, 20, 314\]"):
        av.OviAVLatentFromParts.execute(width=SIDE, height=SIDE, length=10, keep_video=False, keep_audio=True,
                                        audio=audio_latent)
    with pytest.raises(OviInputError, match="different batch sizes"):
        av.OviAVLatentFromParts.execute(width=SIDE, height=SIDE, length=5, keep_video=True, keep_audio=True,
                                        audio=audio_latent, video={"samples": torch.zeros(2, 48, 31, 4, 4)})
    with pytest.raises(OviInputError, match="needs a video_vae"):
        av.OviAVLatentFromParts.execute(width=SIDE, height=SIDE, length=5, keep_video=False, keep_audio=True,
                                        audio=audio_latent, start_image=_clip(1))
    nothing = _one(av.OviAVLatentFromParts.execute(width=SIDE, height=SIDE, length=5, keep_video=False,
                                                   keep_audio=False))
    assert "noise_mask" not in nothing  # nothing kept: plain text -> clip


# ---- Ovi Sampler takes the held parts too (the native path inside) -------------------------------------------------
@pytest.mark.parametrize("held,sync", [("video", 0.0), ("audio", 0.0), ("audio", 1.5)])
def test_ovi_sampler_honours_held_parts_as_the_native_graph(fusion, texts, custom_sampler, video_vae, audio_vae, held,
                                                            sync):
    """Ovi Sampler with a V2A / A2V latent == SamplerCustomAdvanced + Ovi Guider + Ovi Sampler Select + Ovi Scheduler +
    Ovi Noise (same seed, solver, cfg, skip layer, sync guidance): the held part bit for bit, the generated one to
    1e-6. With sync guidance (the lip-sync knob, A2V's use case) the video must differ from the run without it."""
    sampling = _load_nodes_module("sampling")
    model = _one(loaders.OviModelLoader.execute(model_name=DEMO, variant="auto", weight_dtype="auto",
                                                attention="sdpa"))
    if held == "video":
        latent, _ = _out(av.OviVideoToAudio.execute(video_vae=video_vae, images=_clip(), fps=25.0, width=SIDE,
                                                    height=SIDE, length=5))
    else:
        audio_latent = _one(av.OviAudioEncode.execute(audio_vae=audio_vae, audio=_sound(), length=5))
        latent = _one(av.OviAVLatentFromParts.execute(width=SIDE, height=SIDE, length=5, keep_video=False,
                                                      keep_audio=True, audio=audio_latent))
    positive = [[texts.positive[None], {}]]
    negative = [[texts.video_negative[None], {native.AUDIO_CONTEXT_KEY: texts.audio_negative[None]}]]
    video, audio, joint = _out(sampling.OviSampler.execute(
        model=model, seed=SEED, steps=STEPS, solver="unipc", shift=5.0, video_guidance=4.0, audio_guidance=3.0,
        slg_layer=1, width=SIDE, height=SIDE, positive=positive, negative=negative, latent=latent,
        sync_guidance=sync, sync_cut="both"))
    guider = _one(nn.OviGuider.execute(model=model, positive=positive, negative=negative, video_cfg=4.0,
                                       audio_cfg=3.0, skip_layer=1, sync_guidance=sync, sync_cut="both"))
    ref, _ = _out(custom_sampler.SamplerCustomAdvanced.execute(
        _one(nn.OviNoise.execute(seed=SEED, add_noise=True)), guider, _one(nn.OviSamplerSelect.execute(solver="unipc")),
        _one(nn.OviScheduler.execute(solver="unipc", steps=STEPS, shift=5.0)), latent))
    ref_v, ref_a = ref["samples"].unbind()
    kept_v, kept_a = latent["samples"].unbind()
    if held == "video":
        assert torch.equal(video["samples"], kept_v) and (audio["samples"] - ref_a).abs().max() < 1e-6
    else:
        assert torch.equal(audio["samples"], kept_a) and (video["samples"] - ref_v).abs().max() < 1e-6
    assert all(torch.equal(x, y) for x, y in zip(joint["samples"].unbind(), (video["samples"], audio["samples"])))
    if sync:
        plain, _, _ = _out(sampling.OviSampler.execute(
            model=model, seed=SEED, steps=STEPS, solver="unipc", shift=5.0, video_guidance=4.0, audio_guidance=3.0,
            slg_layer=1, width=SIDE, height=SIDE, positive=positive, negative=negative, latent=latent))
        assert (video["samples"] - plain["samples"]).abs().max() > 1e-3


def test_ovi_sampler_held_parts_with_another_shift(video_vae, texts):
    """shift 3 (a ModelSamplingSD3-style patch on a clone; the input MODEL is left as it was): the video still held."""
    sampling = _load_nodes_module("sampling")
    model = _one(loaders.OviModelLoader.execute(model_name=DEMO, variant="auto", weight_dtype="auto",
                                                attention="sdpa"))
    latent, _ = _out(av.OviVideoToAudio.execute(video_vae=video_vae, images=_clip(), fps=25.0, width=SIDE,
                                                height=SIDE, length=5))
    cond = dict(positive=[[texts.positive[None], {}]], negative=[[texts.video_negative[None], {}]])
    runs = [_out(sampling.OviSampler.execute(model=model, seed=SEED, steps=STEPS, solver="euler", shift=shift,
                                             video_guidance=4.0, audio_guidance=3.0, slg_layer=1, width=SIDE,
                                             height=SIDE, latent=latent, **cond)) for shift in (3.0, 5.0)]
    assert all(torch.equal(v["samples"], latent["samples"].unbind()[0]) for v, _, _ in runs)
    assert (runs[0][1]["samples"] - runs[1][1]["samples"]).abs().max() > 1e-3
    assert float(model.get_model_object("model_sampling").shift) == 5.0
    with pytest.raises(OviInputError, match="start_image"):
        sampling.OviSampler.execute(model=model, seed=SEED, steps=STEPS, solver="euler", shift=5.0, video_guidance=4.0,
                                    audio_guidance=3.0, slg_layer=1, width=SIDE, height=SIDE, latent=latent,
                                    start_image=_clip(1), video_vae=video_vae, **cond)
