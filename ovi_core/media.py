# The first-frame rule follows character-ai/Ovi (Apache-2.0): ovi/utils/processing_utils.py preprocess_image_tensor.
"""Conversions between pictures / sound and tensors: the one place where the CLI, the Python API and the nodes turn
an image into Ovi's first frame, frames into pictures, and sound into the layouts each side uses.

    frame = first_frame("face.png", target_area=720 * 720)      # [1, 3, 1, H, W] in [-1, 1], the original's size
    frame = first_frame(image, width=1280, height=704)         # the clip's size (a node's, --width/--height)

First frame for image-to-video (``first_frame``), one behaviour everywhere:
  1. The picture as RGB in 0..1 (see "Pictures in" below), then x * 2 - 1.
  2. Its size. Not given: ``sizes.image_size_for_area(h, w, target_area)``, the multiple-of-32 size nearest the
     model's area with the picture's aspect ratio — the original's numbers exactly. Given (a node's width/height,
     the CLI's --width/--height with --image, a joint latent's size): when (height, width) is the size the original
     gives this picture — ``image_size_for_area`` at width·height, or at the model's ``target_area`` — the whole
     picture is resized, exactly as the original would. Otherwise it is first centre-cropped to width:height
     (nothing is stretched), then resized. (The model's area is asked too because the original's size rule is not
     idempotent: for about one picture in fifteen its size at 720x720's area is not its size at its own area.)
  3. The resize: torch bicubic, align_corners=False, no antialias; the result is not clamped (bicubic overshoots
     [-1, 1] a little at sharp edges, as in the original).
So the CLI without --width/--height and a node given the size the CLI prints make the same first frame bit for bit.

Pictures in (``image_to_rgb``): a file path or a PIL image of any mode (16-bit, float, palette, grey, alpha: read by
``ovi_core.images``); a numpy array uint8 (/255), uint16 (/65535) or float (0..1); a torch tensor [H, W, C] or
[1, H, W, C] (ComfyUI's IMAGE, float 0..1). C = 3; 4 (the alpha is dropped, logged); 1 (grey, repeated to RGB).
Float values outside 0..1 are clipped with a warning. Refused with a message: a batch of several pictures, NaN or
infinite values, an empty picture, other channel counts.

Clips: ``images_to_clip`` (frames [T, H, W, C] in 0..1 -> the video VAE's input [1, 3, T, H, W] in [-1, 1], each
frame by the rule above), ``clip_to_images`` (the VAE's output [B, 3, T, H, W] -> frames [B·T, H, W, 3] in 0..1,
clamped), ``frames_to_uint8`` (for the mp4).

Sound: ``audio_layout`` ([N], [C, N] or [B, C, N] -> [B, C, N]; ComfyUI's AUDIO holds [B, C, N]), ``audio_to_numpy``
(one sound -> numpy [C, N] clipped to [-1, 1], for the mp4).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.nn.functional as F

from ovi_core.errors import OviInputError
from ovi_core.images import pil_to_rgb, read_image
from ovi_core.sizes import check_side, image_size_for_area

logger = logging.getLogger(__name__)

RESIZE_CHUNK = 16  # frames resized at a time (a long clip is not resized in one huge call)


# ---- pictures in -------------------------------------------------------------------------------------------------
def rgb_channels(x: torch.Tensor, name: str = "image") -> torch.Tensor:
    """Channels last [..., C] -> [..., 3]: alpha dropped (logged), grey repeated; other channel counts refused."""
    channels = x.shape[-1]
    if channels == 4:
        logger.info("%s has an alpha channel; it is ignored (the RGB values are used as they are)", name)
        return x[..., :3]
    if channels == 1:
        return x.expand(*x.shape[:-1], 3)
    if channels != 3:
        raise OviInputError(f"{name} has {channels} channels; expected RGB (3), RGBA (4) or grey (1)")
    return x


def _unit_range(x: torch.Tensor, name: str) -> torch.Tensor:
    """Any dtype -> float32 in 0..1: uint8 / 255, uint16 / 65535, floats as they are (NaN refused, outside clipped)."""
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if x.dtype == getattr(torch, "uint16", torch.uint8):  # torch >= 2.3 has uint16 tensors (from numpy)
        return x.float() / 65535.0
    if not x.is_floating_point():
        raise OviInputError(f"{name} must be uint8 (0..255), uint16 (0..65535) or float (0..1), got {x.dtype}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise OviInputError(f"{name} holds NaN or infinite values")
    if x.numel() and (x.min() < 0.0 or x.max() > 1.0):
        logger.warning("%s: values range %.3g..%.3g; outside 0..1 they are clipped", name, float(x.min()),
                       float(x.max()))
        x = x.clamp(0.0, 1.0)
    return x


def image_to_rgb(image, name: str = "image") -> torch.Tensor:
    """One picture (see the module docstring for what is accepted) -> float32 [H, W, 3] in 0..1 on the CPU."""
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    elif hasattr(image, "convert") and hasattr(image, "size") and hasattr(image, "mode"):  # a PIL image
        image = pil_to_rgb(image, name)
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16:
            image = image.astype(np.float32) / 65535.0
        x = torch.from_numpy(np.ascontiguousarray(image))
    elif isinstance(image, torch.Tensor):
        x = image.detach().cpu()
    else:
        raise OviInputError(f"{name} must be an image: a file path, a PIL image, an array/tensor [height, width, "
                            f"channels] or an IMAGE [1, height, width, channels]; got {type(image).__name__}")
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise OviInputError(f"{name} is a batch of {x.shape[0]} images; a clip starts from one picture. Pick one "
                                "with core's ImageFromBatch (batch_index = the frame you want)")
        x = x[0]
    if x.dim() != 3:
        raise OviInputError(f"{name} must be an image [height, width, channels] or an IMAGE [1, height, width, "
                            f"channels], got shape {list(x.shape)}")
    if min(x.shape[:2]) < 1:
        raise OviInputError(f"{name} is empty: {list(x.shape)}")
    return _unit_range(rgb_channels(x, name), name)


# ---- the size rule -----------------------------------------------------------------------------------------------
def is_original_size(h: int, w: int, width: int, height: int, target_area: int | None = None) -> bool:
    """True when (height, width) is the size the original's rule gives an h x w picture (at width·height or at
    ``target_area``): such a picture is resized whole; any other is centre-cropped to width:height first."""
    areas = [a for a in (width * height, target_area) if a is not None and a >= 32 * 32]
    return any(image_size_for_area(h, w, a) == (height, width) for a in areas)


def centre_crop(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[..., h, w] -> the centre of it with the aspect ratio width:height (one side kept whole)."""
    h, w = x.shape[-2:]
    if w * height > h * width:  # too wide
        new_w = max(1, round(h * width / height))
        return x[..., (w - new_w) // 2: (w - new_w) // 2 + new_w]
    if w * height < h * width:  # too tall
        new_h = max(1, round(w * height / width))
        return x[..., (h - new_h) // 2: (h - new_h) // 2 + new_h, :]
    return x


def fit_to_size(x: torch.Tensor, width: int, height: int, target_area: int | None = None) -> torch.Tensor:
    """Pictures [N, 3, h, w] (any range) -> [N, 3, height, width]: the module's size rule (whole when it is the
    original's size for them, else centre-cropped to width:height), then bicubic without antialias, not clamped."""
    width, height = check_side("width", width), check_side("height", height)
    h, w = x.shape[-2:]
    if not is_original_size(h, w, width, height, target_area):
        x = centre_crop(x, width, height)
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return torch.cat([F.interpolate(x[i: i + RESIZE_CHUNK], size=(height, width), mode="bicubic", align_corners=False)
                      for i in range(0, x.shape[0], RESIZE_CHUNK)])


# ---- pictures <-> clips ------------------------------------------------------------------------------------------
def first_frame(image, width: int | None = None, height: int | None = None, target_area: int | None = None,
                name: str = "image") -> torch.Tensor:
    """A picture -> Ovi's image-to-video first frame [1, 3, 1, H, W] in [-1, 1] (float32, CPU), by the rule in the
    module docstring. Give width and height (the clip's size) or neither (then ``target_area`` is needed)."""
    x = image_to_rgb(image, name).permute(2, 0, 1).contiguous()[None] * 2.0 - 1.0  # [1, 3, h, w]
    h, w = x.shape[2:]
    if (width is None) != (height is None):
        raise OviInputError(f"give both width and height for the first frame, or neither; got width={width!r}, "
                            f"height={height!r}")
    if width is None:
        if target_area is None:
            raise OviInputError("first_frame needs the clip's width and height, or the model's target_area")
        height, width = image_size_for_area(h, w, target_area)
        how = "resized"
    else:
        width, height = check_side("width", width), check_side("height", height)
        how = "resized" if is_original_size(h, w, width, height, target_area) else "centre-cropped and resized"
    x = fit_to_size(x, width, height, target_area)
    logger.info("first frame: %dx%d %s %s to %dx%d", w, h, name, how, width, height)
    return x[:, :, None].contiguous()  # [1, 3, 1, H, W]


def images_to_clip(images: torch.Tensor, width: int | None = None, height: int | None = None,
                   target_area: int | None = None, name: str = "images") -> torch.Tensor:
    """Frames [T, H, W, C] in 0..1 (an IMAGE batch; C = 1, 3 or 4) -> the video VAE's input [1, 3, T, H', W'] in
    [-1, 1]: each frame as ``first_frame`` makes a picture (x·2−1, then the size rule; no resize without a size)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < 1 or min(images.shape[1:3]) < 1:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise OviInputError(f"{name} must be an IMAGE batch of frames [frames, height, width, 3]; got {shape}")
    x = _unit_range(rgb_channels(images, name), name).movedim(-1, 1) * 2.0 - 1.0  # [T, 3, h, w]
    if width is not None or height is not None:
        x = fit_to_size(x, width, height, target_area)
    return x.movedim(0, 1)[None].contiguous()  # [1, 3, T, H, W]


def clip_to_images(frames: torch.Tensor) -> torch.Tensor:
    """The video VAE's output [B, 3, T, H, W] in [-1, 1] -> frames [B·T, H, W, 3] float32 in 0..1 (clamped; clips one
    after the other): ComfyUI's IMAGE, OviResult.frames."""
    image = ((frames.float() + 1.0) * 0.5).clamp_(0.0, 1.0)
    return image.permute(0, 2, 3, 4, 1).flatten(0, 1).contiguous()


def frames_to_uint8(frames) -> np.ndarray:
    """[T, H, W, 3] uint8 or float in 0..1 (numpy or torch) -> contiguous uint8 numpy [T, H, W, 3]."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = frames.float().numpy() if frames.dtype.is_floating_point else frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3 and frames.shape[-1] == 3:
        frames = frames[None]  # a single image
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape) < 1:
        raise OviInputError(f"frames must be [frames, height, width, 3] (RGB, channels last), got shape {list(frames.shape)}")
    if frames.dtype == np.uint8:
        return np.ascontiguousarray(frames)
    if not np.issubdtype(frames.dtype, np.floating):
        raise OviInputError(f"frames must be uint8 (0..255) or float (0..1), got {frames.dtype}")
    if not np.isfinite(frames).all():
        raise OviInputError("frames contain NaN or infinite values; the generation diverged")
    return np.ascontiguousarray(np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8))


# ---- sound -------------------------------------------------------------------------------------------------------
def audio_layout(wave, name: str = "audio") -> torch.Tensor:
    """A waveform [N] (mono), [C, N] or [B, C, N] (numpy or torch) -> a tensor [B, C, N] (ComfyUI AUDIO's layout),
    its dtype kept (whoever reads the samples checks them: integer PCM is not silently taken as -1..1 floats)."""
    if isinstance(wave, np.ndarray):
        wave = torch.from_numpy(np.ascontiguousarray(wave))
    if not isinstance(wave, torch.Tensor) or wave.dim() not in (1, 2, 3):
        shape = list(wave.shape) if isinstance(wave, torch.Tensor) else type(wave).__name__
        raise OviInputError(f"{name} must be a waveform [samples], [channels, samples] or [batch, channels, "
                            f"samples]; got {shape}")
    while wave.dim() < 3:
        wave = wave.unsqueeze(0)
    return wave


def audio_to_numpy(audio) -> np.ndarray:
    """One sound [N], [C, N] or [1, C, N] float (numpy or torch) -> float32 numpy [C, N] clipped to [-1, 1]."""
    wave = audio_layout(audio if isinstance(audio, torch.Tensor) else np.asarray(audio, dtype=np.float32))
    if wave.shape[0] != 1 or wave.shape[1] not in (1, 2):
        raise OviInputError(f"audio must be [channels (1 or 2), samples], got shape {list(wave.shape)}")
    audio = wave[0].detach().cpu().float().numpy()
    if not np.isfinite(audio).all():
        raise OviInputError("audio contains NaN or infinite values; the generation diverged")
    return np.clip(audio, -1.0, 1.0)
