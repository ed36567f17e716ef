"""Reading a start image: any file Pillow opens, every pixel format, to float RGB in 0..1.

    rgb = read_image("frame.png")        # float32 numpy [H, W, 3] in 0..1, or OviInputError saying why not

Pillow's ``convert("RGB")`` is right for 8-bit pictures but not for the others: a 16-bit greyscale PNG (modes
``I;16``/``I``) is clipped to 255 and comes out white, and a float TIFF (mode ``F``) is truncated to integers. So the
samples are scaled here by the range their format can hold:

    mode                        read as
    1, L, P, LA, PA, RGB, RGBA, 8 bits per sample, / 255 (palette expanded; alpha dropped, as the README says:
    CMYK, YCbCr, LAB, ...       the colour channels are used as they are)
    I;16, I;16L, I;16B, I;16N   16 bits, / 65535, grey copied to the three channels
    I (32-bit integer)          / 65535 when every value fits 16 bits (how Pillow opens 16-bit PNGs), else / (2^32-1)
    F (32-bit float)            as is (0..1); values outside are clipped with a warning; NaN/inf refused

A 16-bit RGB PNG is opened by Pillow as 8-bit RGB (its high bytes), which keeps the picture. The whole file is
decoded here, so a truncated file is refused now and not halfway through a batch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ovi_core.errors import OviInputError

logger = logging.getLogger(__name__)

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def pil_to_rgb(im, name: str = "the image") -> np.ndarray:
    """A PIL image in any mode -> float32 [H, W, 3] in 0..1 (see the module docstring for each mode)."""
    mode = im.mode
    if mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(im).astype(np.float32) / 65535.0
    elif mode == "I":
        data = np.asarray(im).astype(np.int64)
        if data.size and data.min() < 0:
            raise OviInputError(f"{name} holds negative 32-bit integer samples; save it as an 8- or 16-bit image")
        top = 65535.0 if not data.size or data.max() <= 65535 else 4294967295.0
        grey = (data / top).astype(np.float32)
    elif mode == "F":
        grey = np.asarray(im).astype(np.float32)
        if not np.isfinite(grey).all():
            raise OviInputError(f"{name} holds NaN or infinite values; save it with finite values in 0..1")
        if grey.size and (grey.min() < 0.0 or grey.max() > 1.0):
            logger.warning("%s: float samples range %.3g..%.3g; values outside 0..1 are clipped", name,
                           float(grey.min()), float(grey.max()))
            grey = np.clip(grey, 0.0, 1.0)
    else:
        rgb = im.convert("RGB") if mode != "RGB" else im
        return np.asarray(rgb, dtype=np.float32) / 255.0
    return np.repeat(grey[..., None], 3, axis=2)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The first frame of an image file as float32 [H, W, 3] in 0..1; OviInputError for a missing, unreadable,
    truncated or empty file (the message names the file and what Pillow said)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        if path.is_dir():
            raise OviInputError(f"image {path} is a folder; give an image file (.png, .jpg, .webp, ...)")
        if not path.is_file():
            raise OviInputError(f"image file {path} does not exist")
    except OSError as exc:  # a path too long, a folder that cannot be searched, ...
        raise OviInputError(f"cannot open the image {str(path)[:120]}: {exc.strerror or exc}") from None
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here
            if min(im.size) < 1:
                raise OviInputError(f"image {path} is empty ({im.size[0]}x{im.size[1]} pixels)")
            return pil_to_rgb(im, f"image {path}")
    except OviInputError:
        raise
    except UnidentifiedImageError:
        raise OviInputError(f"{path} is not an image Pillow can read ({path.stat().st_size:,} bytes); use a PNG, JPEG, "
                            "WebP, BMP, GIF or TIFF file") from None
    except Image.DecompressionBombError as exc:
        raise OviInputError(f"image {path} is too large to open safely ({exc}); scale it down first") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data (Pillow raises all three)
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise OviInputError(f"image {path} is truncated or corrupt ({reason}); save or download it again") from None
