"""ovi_core.pipeline on the built-in demo model and on demo weights written in the real file layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovi_core import demo
from ovi_core.errors import OviInputError, OviInterrupted
from ovi_core.model_paths import MissingWeightsError, find_in_comfy_models, find_in_reference_folder
from ovi_core.pipeline import GenerationRequest, OviPipeline
from ovi_core.sizes import image_size_for_area

PROMPT = "A cat plays the piano. <S>Hello there.<E> <AUDCAP>Piano music, a calm voice.<ENDAUDCAP>"


@pytest.fixture(scope="module")
def pipe():
    return OviPipeline.demo(keep_loaded=True)


@pytest.fixture(scope="module")
def clip(pipe):
    return pipe.generate(PROMPT, seed=7, steps=2)


def test_demo_clip_has_the_720x720_5s_structure(clip):
    assert clip.frames.shape == (121, 64, 64, 3) and clip.frames.dtype == torch.float32
    assert 0.0 <= clip.frames.min() and clip.frames.max() <= 1.0
    assert clip.audio.shape == (1, 157 * 512) and clip.sample_rate == 16000 and clip.fps == 24
    assert abs(clip.video_seconds - 121 / 24) < 1e-9 and abs(clip.audio_seconds - 5.024) < 1e-9
    assert clip.is_demo and clip.settings.steps == 2 and clip.settings.seed == 7
    assert "DEMO MODEL" in clip.metadata()["comment"]


def test_a_seed_gives_the_same_clip_and_another_seed_another(pipe, clip):
    again = pipe.generate(PROMPT, seed=7, steps=2)
    assert torch.equal(again.frames, clip.frames) and torch.equal(again.audio, clip.audio)
    other = pipe.generate(PROMPT, seed=8, steps=2)
    assert not torch.allclose(other.frames, clip.frames)


def test_the_prompt_is_rewritten_for_the_model(pipe):
    result = pipe.generate("A dog barks. Audio: barking", steps=1)
    assert result.prompt == "A dog barks. <AUDCAP>barking<ENDAUDCAP>"


def test_image_to_video_takes_its_size_from_the_image(pipe, clip):
    image = (np.random.default_rng(0).random((40, 80, 3)) * 255).astype(np.uint8)  # 2:1
    result = pipe.generate(PROMPT, image=image, seed=7, steps=2)
    h, w = image_size_for_area(40, 80, demo.DEMO_VARIANT.target_area)
    assert result.frames.shape == (121, h, w, 3) and result.image_to_video
    square = pipe.generate(PROMPT, image=torch.rand(1, 64, 64, 3), seed=7, steps=2)  # ComfyUI IMAGE layout
    assert square.frames.shape == clip.frames.shape and not torch.allclose(square.frames, clip.frames)


def test_models_are_loaded_one_stage_at_a_time():
    """The text encoder is gone before the fusion model loads; nothing stays loaded after a run."""
    pipe = OviPipeline.demo()
    events = []

    def tracked(name, load):
        def wrapper():
            events.append((name, sorted(k for k, p in pipe.parts.items() if p.obj is not None)))
            return load()
        return wrapper

    for name, part in pipe.parts.items():
        part._load = tracked(name, part._load)
    pipe.generate(PROMPT, steps=1)
    assert [e[0] for e in events] == ["text_encoder", "fusion", "video_vae", "audio_decoder"]
    assert dict(events)["fusion"] == []  # nothing else in memory while the biggest model loads
    assert all(p.obj is None for p in pipe.parts.values())


def test_progress_reports_the_stages_and_ctrl_c_stops_cleanly():
    pipe = OviPipeline.demo()
    seen = []
    pipe.generate(PROMPT, steps=3, progress=lambda p: seen.append((p.stage, p.done, p.total)))
    stages = [s for s, _, _ in seen]
    assert stages.index("text") < stages.index("sample") < stages.index("decode")
    assert ("sample", 3, 3) in seen and ("decode", 32, 32) in seen  # 31 latent frames of video, then the audio
    assert [d for s, d, _ in seen if s == "decode"] == list(range(33))

    def stop(p):
        if p.stage == "sample" and p.done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe.generate(PROMPT, steps=3, progress=stop)
    assert all(p.obj is None for p in pipe.parts.values())
    with pytest.raises(OviInterrupted):
        pipe.generate(PROMPT, steps=3, should_interrupt=lambda: True)


def test_bad_arguments_raise_before_any_model_loads():
    pipe = OviPipeline.demo()
    with pytest.raises(OviInputError, match="prompt is empty"):
        pipe.generate("  ")
    with pytest.raises(OviInputError, match="slg_layer"):
        pipe.generate(PROMPT, slg_layer=11)  # the demo model has 3 fused blocks
    with pytest.raises(OviInputError, match="steps"):
        pipe.generate(PROMPT, steps=0)
    with pytest.raises(OviInputError, match="does not exist"):
        pipe.generate(PROMPT, image="/nonexistent/image.png")
    assert all(p.obj is None for p in pipe.parts.values())


def test_a_batch_goes_on_past_failed_requests(pipe, tmp_path):
    requests = [GenerationRequest(PROMPT, settings=pipe.settings(steps=1)),
                GenerationRequest("", settings=pipe.settings(steps=1)),
                GenerationRequest(PROMPT, image=tmp_path / "missing.png", settings=pipe.settings(steps=1)),
                GenerationRequest(PROMPT, settings=pipe.settings(steps=1, seed=5))]
    saved = []

    def on_result(i, result):
        if i == 3:
            raise OSError("disk full")
        saved.append(i)

    report = pipe.generate_batch(requests, on_result=on_result)
    assert saved == [0]
    assert sorted(report.errors) == [1, 2, 3] and not report.ok
    assert "empty" in str(report.errors[1]) and "disk full" in str(report.errors[3])


@pytest.mark.parametrize("layout", ["reference", "comfy"])
def test_weights_in_the_real_layouts_load_and_generate(tmp_path, layout):
    demo.write_demo_checkpoints(tmp_path, layout)
    find = find_in_reference_folder if layout == "reference" else find_in_comfy_models
    paths = find(tmp_path)
    assert paths.variant.name == "720x720_5s" and paths.fusion.name == "model.safetensors"
    assert (paths.vocoder is None) == (layout == "comfy")  # ComfyUI's MMAudio file carries the vocoder
    build = OviPipeline.from_folder if layout == "reference" else OviPipeline.from_comfy_models
    pipe = build(tmp_path, dtype=torch.float32, num_threads=1)
    assert pipe.variant.name == "720x720_5s" and pipe.num_layers == 3
    pipe.variant = demo.DEMO_VARIANT  # the real loaders, at the demo's 64x64 so the test stays fast
    result = pipe.generate(PROMPT, steps=1, slg_layer=1)
    assert result.frames.shape == (121, 64, 64, 3) and result.audio.shape == (1, 80384)
    assert all(p.obj is None for p in pipe.parts.values())


def test_missing_weights_say_which_file_where_and_where_to_get_it(tmp_path):
    (tmp_path / "Ovi").mkdir()
    (tmp_path / "Wan2.2-TI2V-5B").mkdir()
    (tmp_path / "Wan2.2-TI2V-5B" / "Wan2.2_VAE.pth").write_bytes(b"x")
    with pytest.raises(MissingWeightsError) as err:
        find_in_reference_folder(tmp_path)
    msg = str(err.value)
    for needle in ("model.safetensors", "chetwinlow1/Ovi", "models_t5_umt5-xxl-enc-bf16.pth", "Wan-AI/Wan2.2-TI2V-5B",
                   "v1-16.pth", "best_netG.pt", "hkchengrex/MMAudio", str(tmp_path / "MMAudio" / "ext_weights")):
        assert needle in msg
    assert "Wan2.2_VAE.pth" not in msg.split("video VAE")[0] and "\n" not in msg
    with pytest.raises(MissingWeightsError, match="umt5_xxl_fp16.safetensors.*wan2.2_vae.safetensors"):
        find_in_comfy_models(tmp_path)


def test_a_non_ovi_file_in_the_comfy_folder_is_named_in_the_error(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "diffusion_models").mkdir()
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, str(tmp_path / "diffusion_models" / "Wan_2_2_Ovi_video.safetensors"))
    with pytest.raises(MissingWeightsError, match="Wan_2_2_Ovi_video.safetensors"):
        find_in_comfy_models(tmp_path)


# ---- start images in every pixel format ------------------------------------------------------------------------
def _png16(path, rgb16: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


_RAMP = np.linspace(0.0, 1.0, 24 * 32).reshape(24, 32)  # every picture below is this ramp (grey) or a colour of it


def _write(kind: str, path):
    """(file written as ``kind``, the RGB 0..1 it must read as, tolerance)."""
    from PIL import Image

    grey8 = np.round(_RAMP * 255).astype(np.uint8)
    grey = np.repeat((grey8 / 255.0)[..., None], 3, axis=2)
    colour8 = np.stack([grey8, 255 - grey8, np.full_like(grey8, 64)], axis=-1)
    colour = colour8 / 255.0
    if kind == "rgb8":
        Image.fromarray(colour8).save(path)
        return colour, 0
    if kind == "rgba8":
        Image.fromarray(np.dstack([colour8, np.full_like(grey8, 10)])).save(path)  # nearly transparent: colours kept
        return colour, 0
    if kind == "grey8":
        Image.fromarray(grey8).save(path)
        return grey, 0
    if kind == "grey_alpha":
        Image.fromarray(np.dstack([grey8, 255 - grey8]), mode="LA").save(path)
        return grey, 0
    if kind == "palette":
        Image.fromarray(colour8).quantize(256, dither=Image.Dither.NONE).save(path)
        return colour, 6 / 255  # 256 palette colours for 768 pixels: close, not exact
    if kind == "bilevel":
        Image.fromarray(grey8 > 127).save(path)
        return np.repeat((grey8 > 127)[..., None], 3, axis=2).astype(np.float64), 0
    if kind == "grey16":
        g16 = np.round(_RAMP * 65535).astype(np.uint16)
        Image.fromarray(g16).save(path)  # mode I;16
        return np.repeat((g16 / 65535.0)[..., None], 3, axis=2), 1e-6
    if kind == "rgb16":
        c16 = np.stack([np.round(_RAMP * 65535), np.round((1 - _RAMP) * 65535), np.full_like(_RAMP, 16448)],
                       -1).astype(np.uint16)
        _png16(path, c16)
        return c16 / 65535.0, 1 / 255  # Pillow keeps the high byte of each sample
    if kind == "grey32_int_tiff":
        g16 = np.round(_RAMP * 65535).astype(np.int32)
        Image.fromarray(g16, mode="I").save(path)
        return np.repeat((g16 / 65535.0)[..., None], 3, axis=2), 1e-6
    if kind == "float_tiff":
        Image.fromarray(_RAMP.astype(np.float32), mode="F").save(path)
        return np.repeat(_RAMP[..., None], 3, axis=2), 1e-6
    if kind == "float_tiff_out_of_range":
        Image.fromarray((_RAMP * 3 - 1).astype(np.float32), mode="F").save(path)
        return np.repeat(np.clip(_RAMP * 3 - 1, 0, 1)[..., None], 3, axis=2), 1e-6
    if kind == "cmyk_jpeg":
        Image.fromarray(colour8).convert("CMYK").save(path, quality=100)
        return colour, 12 / 255  # JPEG
    raise AssertionError(kind)


IMAGE_KINDS = {"rgb8": "png", "rgba8": "png", "grey8": "png", "grey_alpha": "png", "palette": "png", "bilevel": "png",
               "grey16": "png", "rgb16": "png", "grey32_int_tiff": "tiff", "float_tiff": "tiff",
               "float_tiff_out_of_range": "tiff", "cmyk_jpeg": "jpg"}


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_every_pixel_format_reads_as_rgb_in_0_to_1(tmp_path, kind):
    from ovi_core.images import read_image
    from ovi_core.media import image_to_rgb

    path = tmp_path / f"{kind}.{IMAGE_KINDS[kind]}"
    expected, tol = _write(kind, path)
    rgb = read_image(path)
    assert rgb.shape == (24, 32, 3) and rgb.dtype == np.float32
    assert np.abs(rgb - expected).max() <= tol + 1e-6
    x = image_to_rgb(path)  # what the pipeline uses (through media.first_frame): [H, W, 3]
    assert x.shape == (24, 32, 3) and torch.allclose(x, torch.from_numpy(rgb))


def test_a_16_bit_png_is_not_a_white_frame(tmp_path):
    """The bug this guards against: Pillow's convert('RGB') clips 16-bit grey to 255."""
    from PIL import Image

    from ovi_core.media import first_frame

    Image.fromarray(np.full((64, 64), 1000, np.uint16)).save(tmp_path / "dark16.png")  # 1000/65535: nearly black
    frame = first_frame(tmp_path / "dark16.png", target_area=64 * 64)  # in -1..1
    assert frame.shape == (1, 3, 1, 64, 64)
    assert torch.allclose(frame, torch.full_like(frame, 1000 / 65535 * 2 - 1), atol=1e-5)


def test_arrays_of_16_bit_samples_are_scaled():
    from ovi_core.media import image_to_rgb

    x = image_to_rgb(np.full((4, 4, 3), 65535, np.uint16))
    assert torch.allclose(x, torch.ones(4, 4, 3))
    with pytest.raises(OviInputError, match="NaN"):
        image_to_rgb(np.full((4, 4, 3), np.nan, np.float32))
