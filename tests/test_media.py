"""ovi_core.media, the one conversion layer: the image-to-video first frame is the same bit for bit through the CLI
(`generate --image F`, with and without --width/--height) and through Ovi Sampler (a LoadImage IMAGE of the same
file), it is the original Ovi's preprocessing when no size is given, a picture of another aspect ratio is
centre-cropped (not stretched), and bad pictures are refused with a message. Plus the frame and sound layouts."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nodes.convert import audio_from_comfy, audio_to_comfy
from nodes.sampling import encode_start_image
from ovi_core.cli import build_parser, check_size
from ovi_core.config import get_variant
from ovi_core.errors import OviInputError
from ovi_core.media import (
    audio_layout,
    audio_to_numpy,
    clip_to_images,
    first_frame,
    image_to_rgb,
    images_to_clip,
    is_original_size,
)
from ovi_core.pipeline import GenerationRequest, OviPipeline, _Row
from ovi_core.sizes import image_size_for_area

PROMPT = "A face. <S>Hello.<E> <AUDCAP>A calm voice.<ENDAUDCAP>"
VARIANT = "720x720_5s"
AREA = get_variant(VARIANT).target_area


def _pixels(h: int, w: int, channels: int, seed: int, dtype=np.uint8) -> np.ndarray:
    """A smooth picture with detail (gradients + a sine pattern + a little noise), so resizes differ visibly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = [0.5 + 0.4 * np.sin(9 * x + 5 * y + c) + 0.1 * rng.random((h, w)) for c in range(channels)]
    top = 65535 if dtype == np.uint16 else 255
    return np.round(np.clip(np.stack(base, -1), 0, 1) * top).astype(dtype)


# kind -> (height, width, writer): square, wide, tall, odd sizes, RGBA, grey, 16-bit
def _write(kind: str, path) -> None:
    h, w = IMAGES[kind]
    if kind == "rgba":
        Image.fromarray(_pixels(h, w, 4, 1), mode="RGBA").save(path)
    elif kind == "grey":
        Image.fromarray(_pixels(h, w, 1, 2)[..., 0], mode="L").save(path)
    elif kind == "grey16":
        Image.fromarray(_pixels(h, w, 1, 3, np.uint16)[..., 0]).save(path)  # mode I;16
    else:
        Image.fromarray(_pixels(h, w, 3, 4)).save(path)


IMAGES = {"square": (300, 300), "wide": (360, 640), "tall": (1000, 563), "odd": (47, 93), "odd_tall": (201, 77),
          "rgba": (250, 333), "grey": (480, 270), "grey16": (123, 321)}


def _comfy_image(kind: str, path) -> torch.Tensor:
    """What LoadImage (ComfyUI nodes.py) hands the sampler for the file: uint8 samples / 255 as float32
    [1, H, W, C]. RGBA and grey are passed with their own channel count (4 and 1) to exercise the node's channel
    handling. ComfyUI's LoadImage reads 16-bit files through 8 bits; here the 16-bit file is given at full
    precision (what ovi_core.images reads, e.g. from a 16-bit loader node) — the point is the same data in."""
    with Image.open(path) as im:
        if kind == "grey16":
            data = np.asarray(im).astype(np.float32) / 65535.0
            return torch.from_numpy(np.repeat(data[..., None], 3, axis=2))[None]
        if kind in ("rgba", "grey"):
            data = np.asarray(im)
            data = data[..., None] if data.ndim == 2 else data
        else:
            data = np.asarray(im.convert("RGB"))
    return torch.from_numpy(data.astype(np.float32) / 255.0)[None]


def _cli_first_frame(path, *size_args: str) -> torch.Tensor:
    """What `generate --image PATH [--width W --height H]` encodes: the CLI's arguments, its size check, the request
    it builds, and the pipeline's preparation step (no model is loaded)."""
    args = build_parser().parse_args(["generate", "--prompt", PROMPT, "--image", str(path), *size_args])
    none = {k: (lambda: None) for k in ("text_encoder", "fusion", "video_vae", "audio_decoder")}
    pipe = OviPipeline(get_variant(VARIANT), none, num_layers=30, device="cpu")
    check_size(args, pipe)
    row = _Row(0, GenerationRequest(args.prompt, args.image, args.height, args.width))
    pipe._prepare(row)
    assert tuple(row.video_shape[2:]) == (row.image.shape[3] // 16, row.image.shape[4] // 16)
    return row.image


def _node_first_frame(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """What Ovi Sampler encodes for a start_image at width x height with a 720x720_5s model (the VAE's input)."""
    vae = SimpleNamespace(acquire=lambda: SimpleNamespace(encode=lambda frames: frames))
    return encode_start_image(image, vae, width, height, AREA)


# ---- (a) the CLI and the node give the same first frame ------------------------------------------------------------
@pytest.mark.parametrize("kind", IMAGES)
def test_cli_and_node_make_the_same_first_frame(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    _write(kind, path)
    image = _comfy_image(kind, path)
    # no size: the CLI takes the original's size; the node is given that size (what the CLI prints)
    cli = _cli_first_frame(path)
    h, w = image_size_for_area(*IMAGES[kind], AREA)
    assert cli.shape == (1, 3, 1, h, w) and cli.dtype == torch.float32
    assert torch.equal(_node_first_frame(image, w, h), cli)
    # an explicit size (at the model's area, so the CLI keeps it as given) of another aspect ratio: both crop the
    # same centre
    for width, height in ((960, 544), (576, 896)):
        cli = _cli_first_frame(path, "--width", str(width), "--height", str(height))
        assert cli.shape == (1, 3, 1, height, width)
        assert torch.equal(_node_first_frame(image, width, height), cli)


def test_the_python_api_encodes_the_same_first_frame(monkeypatch):
    """OviPipeline.generate(image=...) (demo model) hands the VAE media.first_frame's frame."""
    pipe = OviPipeline.demo()
    seen = []
    vae = pipe.parts["video_vae"].get()
    encode = vae.encode
    monkeypatch.setattr(vae, "encode", lambda x, *a, **k: seen.append(x.clone()) or encode(x, *a, **k))
    pipe.parts["video_vae"].get = lambda: vae
    image = torch.from_numpy(_pixels(50, 90, 3, 5).astype(np.float32) / 255.0)[None]
    pipe.generate(PROMPT, image=image, seed=1, steps=1)
    pipe.generate(PROMPT, image=image, seed=1, steps=1, width=64, height=64)
    area = pipe.variant.target_area
    assert torch.equal(seen[0], first_frame(image, target_area=area))
    assert seen[1].shape[3:] == (64, 64) and torch.equal(seen[1], first_frame(image, 64, 64, area))


# ---- (b) no size: the original's preprocessing ---------------------------------------------------------------------
def _original_size(h: int, w: int, area: int, multiple: int = 32) -> tuple[int, int]:
    """The original's best multiple-of-32 size for an area (written out again here, independently of ovi_core)."""
    ratio = w / h
    units = max(1, area // (multiple * multiple))
    p0 = max(1, int(round(math.sqrt(units / max(ratio, 1e-8)))))
    sizes = [(max(1, p) * multiple, max(1, int(round(max(1, p) * ratio))) * multiple) for p in range(p0 - 3, p0 + 4)]
    scale = math.sqrt(area / (h * w))
    sizes.append((max(multiple, int(round(h * scale / multiple)) * multiple),
                   max(multiple, int(round(w * scale / multiple)) * multiple)))
    return min(sizes, key=lambda s: (abs(s[0] * s[1] - area), abs(s[1] / s[0] - ratio)))


@pytest.mark.parametrize("kind", ["square", "wide", "tall", "odd", "rgba", "grey"])
@pytest.mark.parametrize("area", [AREA, 960 * 960])
def test_without_a_size_the_frame_is_the_originals(tmp_path, kind, area):
    path = tmp_path / f"{kind}.png"
    _write(kind, path)
    with Image.open(path) as im:  # the original: RGB / 255 * 2 - 1, bicubic to the best size, no antialias, no clamp
        rgb = np.asarray(im.convert("RGB")).transpose(2, 0, 1).astype(np.float32) / 255.0
    x = torch.from_numpy(rgb).unsqueeze(0) * 2.0 - 1.0
    size = _original_size(*IMAGES[kind], area)
    expected = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    frame = first_frame(path, target_area=area)
    assert frame.shape == (1, 3, 1, *size)
    assert torch.equal(frame[:, :, 0], expected)
    if kind in ("square", "odd"):  # not clamped: bicubic overshoots at sharp detail, as in the original
        assert frame.min() >= -1.1 and frame.max() <= 1.1


def test_a_size_the_original_gives_the_picture_is_never_cropped():
    """Where the original's own size rule lands on the clip's size the picture is resized whole, as the original
    does — even at a tiny area where that rule rounds a 2:1 picture to 32x32."""
    assert image_size_for_area(40, 80, 32 * 32) == (32, 32) and is_original_size(40, 80, 32, 32)
    image = torch.rand(1, 40, 80, 3, generator=torch.Generator().manual_seed(1))
    whole = F.interpolate(image.permute(0, 3, 1, 2) * 2 - 1, size=(32, 32), mode="bicubic", align_corners=False)
    assert torch.equal(first_frame(image, 32, 32)[:, :, 0], whole)


def test_the_original_size_rule_is_asked_at_the_models_area_too():
    """The original's rule is not idempotent: a 100x282 picture gets 1216x416 at 720x720's area, but 1184x416 at
    1216x416's own area. The node knows the model's area and resizes such a picture whole, as the CLI does."""
    assert image_size_for_area(100, 282, AREA) == (416, 1216) and image_size_for_area(100, 282, 416 * 1216) != (416, 1216)
    assert is_original_size(100, 282, 1216, 416, AREA) and not is_original_size(100, 282, 1216, 416)
    image = torch.from_numpy(_pixels(100, 282, 3, 6).astype(np.float32) / 255.0)[None]
    assert torch.equal(_node_first_frame(image, 1216, 416), first_frame(image, target_area=AREA))


# ---- (c) another aspect ratio is centre-cropped, not stretched -----------------------------------------------------
def test_a_far_aspect_ratio_is_centre_cropped(caplog):
    # 3:1 picture: red left third, a green-to-blue centre third, red right third; a square clip keeps the centre
    image = torch.zeros(1, 200, 600, 3)
    image[..., 0] = 1.0
    centre = torch.zeros(200, 200, 3)
    centre[..., 1] = torch.linspace(1, 0, 200)[None, :]
    centre[..., 2] = torch.linspace(0, 1, 200)[None, :]
    image[0, :, 200:400] = centre
    assert not is_original_size(200, 600, 64, 64, AREA)
    with caplog.at_level(logging.INFO, logger="ovi_core.media"):
        frame = first_frame(image, 64, 64, AREA)
    assert "600x200 image centre-cropped and resized to 64x64" in caplog.text
    expected = F.interpolate(centre.permute(2, 0, 1)[None] * 2 - 1, size=(64, 64), mode="bicubic", align_corners=False)
    assert torch.equal(frame[:, :, 0], expected)
    assert frame[0, 0].abs().max() > 0.99 and frame[0, 0].mean() < -0.99  # no red: the sides are gone
    # a tall picture loses its top and bottom thirds the same way
    tall = first_frame(image.transpose(1, 2), 64, 64, AREA)
    assert torch.equal(tall[:, :, 0], F.interpolate(centre.transpose(0, 1).permute(2, 0, 1)[None] * 2 - 1,
                                                    size=(64, 64), mode="bicubic", align_corners=False))


# ---- (d) bad pictures are refused with a message -------------------------------------------------------------------
def test_bad_pictures_are_refused_with_a_message(tmp_path):
    with pytest.raises(OviInputError, match="batch of 2 images.*ImageFromBatch"):
        first_frame(torch.rand(2, 64, 64, 3), 64, 64)
    with pytest.raises(OviInputError, match="NaN"):
        first_frame(torch.full((1, 8, 8, 3), float("nan")), 64, 64)
    with pytest.raises(OviInputError, match="empty"):
        first_frame(torch.zeros(1, 0, 8, 3), 64, 64)
    with pytest.raises(OviInputError, match="5 channels"):
        first_frame(torch.rand(1, 8, 8, 5), 64, 64)
    with pytest.raises(OviInputError, match="int32"):
        first_frame(np.zeros((8, 8, 3), np.int32), 64, 64)
    with pytest.raises(OviInputError, match=r"shape \[2, 1, 8, 8, 3\]"):
        first_frame(torch.rand(2, 1, 8, 8, 3), 64, 64)
    with pytest.raises(OviInputError, match="must be an image: a file path, a PIL image"):
        first_frame([[0.5]], 64, 64)
    with pytest.raises(OviInputError, match="does not exist"):
        first_frame(tmp_path / "missing.png", target_area=AREA)
    with pytest.raises(OviInputError, match="both width and height"):
        first_frame(torch.rand(8, 8, 3), width=64)
    with pytest.raises(OviInputError, match="target_area"):
        first_frame(torch.rand(8, 8, 3))
    with pytest.raises(OviInputError, match="width must be between 1 and 16384 pixels, got 0"):
        first_frame(torch.rand(8, 8, 3), 0, 64)
    with pytest.raises(OviInputError, match="height must be a whole number of pixels, got 64.5"):
        first_frame(torch.rand(8, 8, 3), 64, 64.5)


def test_every_input_form_gives_the_same_picture(tmp_path, caplog):
    pixels = _pixels(20, 30, 3, 7)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    ref = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    for form in (tmp_path / "p.png", str(tmp_path / "p.png"), Image.fromarray(pixels), pixels, torch.from_numpy(pixels),
                 ref, ref[None], ref.numpy().astype(np.float64)):
        assert torch.equal(image_to_rgb(form), ref), type(form)
    assert torch.equal(image_to_rgb(pixels.astype(np.uint16) * 257), ref)  # 16-bit samples / 65535
    grey = image_to_rgb(ref[..., :1])
    assert grey.shape == (20, 30, 3) and torch.equal(grey[..., 2], ref[..., 0])
    with caplog.at_level(logging.INFO, logger="ovi_core.media"):
        assert torch.equal(image_to_rgb(torch.cat([ref, torch.ones(20, 30, 1)], -1)), ref)
    assert "alpha channel; it is ignored" in caplog.text
    with caplog.at_level(logging.WARNING, logger="ovi_core.media"):
        assert float(image_to_rgb(ref * 3 - 1).max()) == 1.0
    assert "outside 0..1 they are clipped" in caplog.text


# ---- frames and sound ----------------------------------------------------------------------------------------------
def test_frames_round_trip_between_images_and_clips():
    images = torch.rand(5, 32, 48, 3)
    clip = images_to_clip(images)
    assert clip.shape == (1, 3, 5, 32, 48) and torch.equal(clip[0, :, 2], images[2].permute(2, 0, 1) * 2 - 1)
    assert torch.allclose(clip_to_images(clip), images, atol=1e-6)
    # with a size each frame follows first_frame's rule
    resized = images_to_clip(images, 64, 64, AREA)
    assert torch.equal(resized[:, :, 3:4], first_frame(images[3:4], 64, 64, AREA))
    two = torch.stack([clip[0], -clip[0]])  # [B=2, 3, T, H, W] -> clips one after the other, clamped
    out = clip_to_images(two * 1.5)
    assert out.shape == (10, 32, 48, 3) and out.min() >= 0 and out.max() <= 1


def test_sound_layouts():
    mono = torch.linspace(-1, 1, 100)
    assert audio_layout(mono).shape == (1, 1, 100) and audio_layout(mono[None]).shape == (1, 1, 100)
    assert audio_layout(np.zeros((3, 2, 10), np.float32)).shape == (3, 2, 10)
    with pytest.raises(OviInputError, match="waveform"):
        audio_layout(torch.zeros(1, 1, 1, 10))
    assert audio_to_numpy(mono * 2).max() == 1.0 and audio_to_numpy(mono).shape == (1, 100)
    with pytest.raises(OviInputError, match="audio must be"):
        audio_to_numpy(torch.zeros(2, 2, 10))
    packed = audio_to_comfy(mono, 16000)
    assert packed["waveform"].shape == (1, 1, 100) and packed["sample_rate"] == 16000
    wave, rate = audio_from_comfy(packed, one=True)
    assert torch.equal(wave, packed["waveform"]) and rate == 16000
    with pytest.raises(OviInputError, match="batch of 2 sounds"):
        audio_from_comfy({"waveform": torch.zeros(2, 1, 10), "sample_rate": 16000}, one=True)
    with pytest.raises(OviInputError, match="sample rate"):
        audio_from_comfy({"waveform": torch.zeros(1, 1, 10), "sample_rate": 0})
    with pytest.raises(OviInputError, match="AUDIO"):
        audio_from_comfy(torch.zeros(1, 1, 10))
