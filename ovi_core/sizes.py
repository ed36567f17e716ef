# Size rules follow character-ai/Ovi (Apache-2.0): ovi/utils/processing_utils.py and ovi/ovi_fusion_engine.py.
"""Video sizes and latent shapes for a model variant.

Ovi generates at (about) the variant's trained area whatever size is asked for: a text-to-video request
(height, width) only sets the aspect ratio. It is rescaled to the target area, each side rounded to the nearest
multiple of 32 (Python's ``round``, so ties go to the even multiple: 720×720 → 704×704), and a warning is logged
when the request was more than 10 % off the target area. The latent is 1/16 of the pixel size, 48 channels;
the number of latent frames and audio latents is fixed by the variant (31/157 for 5 s, 61/314 for 10 s).
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass

from ovi_core.errors import OviInputError

logger = logging.getLogger(__name__)

VIDEO_LATENT_CHANNELS = 48  # Wan2.2 VAE
AUDIO_LATENT_CHANNELS = 20  # MMAudio 16 kHz VAE
VAE_STRIDE = 16  # pixels per video latent cell
SIZE_MULTIPLE = 32  # = VAE stride x the DiT's 2x2 patch
MAX_SIDE = 16384
AREA_TOLERANCE = 0.10
# Largest clip accepted at an exact size (nodes, Python API): this factor times the variant's trained area, i.e.
# 1.5x the trained side in each direction (720x720_5s: 1,166,400 px, e.g. 1088x1056; the 960 models: 2,073,600 px,
# e.g. 1920x1056). Attention cost grows with the square of the token count, so 2.25x the area is already ~5x the
# time of a normal clip; 4096x4096 (32x the 720 area) would run for hours and is refused before anything runs.
MAX_AREA_FACTOR = 2.25
LARGEST_TRAINED_AREA = 960 * 960  # the largest released variant's (config.VARIANTS); used when the model is unknown


@dataclass(frozen=True)
class LatentShapes:
    """What the sampler draws noise for: video [48, F, h, w], audio [L, 20]; and the pixel size it decodes to."""

    height: int  # pixels, multiple of 32
    width: int
    video: tuple[int, int, int, int]  # (48, F, height/16, width/16)
    audio: tuple[int, int]  # (L, 20)

    @property
    def num_video_tokens(self) -> int:
        _, f, h, w = self.video
        return f * (h // 2) * (w // 2)


def check_side(name: str, value) -> int:
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise OviInputError(f"{name} must be a whole number of pixels, got {value!r}")
    value = int(value)
    if not 1 <= value <= MAX_SIDE:
        raise OviInputError(f"{name} must be between 1 and {MAX_SIDE} pixels, got {value}")
    return value


def _check_area(target_area) -> int:
    if isinstance(target_area, bool) or not isinstance(target_area, int) or target_area < SIZE_MULTIPLE**2:
        raise OviInputError(
            f"target area must be a whole number of pixels >= {SIZE_MULTIPLE ** 2}, got {target_area!r}"
        )
    return target_area


def snap_to_area(height: int, width: int, target_area: int) -> tuple[int, int]:
    """(height, width) rescaled to ``target_area`` keeping the aspect ratio, each side rounded to a multiple of 32.

    Exactly the reference's rule: scale = sqrt(area / (h·w)); h, w = round(h·scale), round(w·scale);
    side = max(32, round(side / 32)·32), with Python's round-half-even at both roundings."""
    height, width = check_side("height", height), check_side("width", width)
    target_area = _check_area(target_area)
    scale = math.sqrt(target_area / float(height * width))
    h, w = int(round(height * scale)), int(round(width * scale))
    return _snap32(h), _snap32(w)


def _snap32(x: int) -> int:
    return max(SIZE_MULTIPLE, int(round(x / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def is_far_from_area(height: int, width: int, target_area: int) -> bool:
    """True when height·width is more than 10 % smaller or larger than the target area (the reference warns)."""
    area = height * width
    return area < (1 - AREA_TOLERANCE) * target_area or area > (1 + AREA_TOLERANCE) * target_area


def video_size_for_variant(height: int, width: int, target_area: int, variant_name: str = "") -> tuple[int, int]:
    """The (height, width) the model generates for a text-to-video request; warns when the request is far off."""
    snapped = snap_to_area(height, width, target_area)
    if is_far_from_area(height, width, target_area):
        side = math.isqrt(target_area)
        logger.warning(
            "asked for %dx%d (width x height), more than 10%% off the area %s generates (about %dx%d pixels "
            "whatever the size asked): only the aspect ratio is kept, so the clip will be %dx%d. Ask for a size near "
            "%dx%d pixels in total (e.g. %dx%d) to get exactly that size and silence this.",
            width, height, f"the {variant_name} model" if variant_name else "the model", side, side, snapped[1],
            snapped[0], side, side, snapped[1], snapped[0],
        )
    return snapped


def image_size_for_area(height: int, width: int, target_area: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """Multiple-of-32 (H, W) an image-to-video first frame is resized to (the reference's image preprocessing).

    Candidates: rows p = p0−3..p0+3 around p0 = round(sqrt(units / ratio)) (units = area // 32², ratio = w/h), each
    with columns round(p·ratio); plus the plain scale-and-round size. The winner has the area closest to the
    target, then the aspect ratio closest to the image's."""
    height, width = check_side("image height", height), check_side("image width", width)
    target_area = _check_area(target_area)
    ratio = width / float(height)
    units = max(1, target_area // (multiple * multiple))
    p0 = max(1, int(round(math.sqrt(units / max(ratio, 1e-8)))))
    candidates = []
    for p in (max(1, p0 + dp) for dp in range(-3, 4)):
        q = max(1, int(round(p * ratio)))
        candidates.append((p * multiple, q * multiple))
    scale = math.sqrt(target_area / (height * float(width)))
    candidates.append(
        (
            max(multiple, int(round(height * scale / multiple)) * multiple),
            max(multiple, int(round(width * scale / multiple)) * multiple),
        )
    )
    return min(candidates, key=lambda hw: (abs(hw[0] * hw[1] - target_area), abs(hw[1] / max(hw[0], 1e-8) - ratio)))


def check_clip_size(width, height, target_area: int | None = None, what: str = "") -> tuple[int, int]:
    """(width, height) of an exact-size clip, or OviInputError saying what is wrong and what is allowed.

    Sides: whole numbers, multiples of 32. Area: at most MAX_AREA_FACTOR x ``target_area`` (the variant's trained
    area; the largest variant's when None)."""
    area_cap = int(MAX_AREA_FACTOR * (target_area or LARGEST_TRAINED_AREA))
    sides = []
    for name, v in (("width", width), ("height", height)):
        whole = isinstance(v, numbers.Integral) or (isinstance(v, float) and v.is_integer())
        if isinstance(v, bool) or not whole:
            raise OviInputError(f"{name} must be a whole number of pixels, got {v!r}")
        v = int(v)
        if v < SIZE_MULTIPLE:
            raise OviInputError(f"{name} must be at least {SIZE_MULTIPLE} pixels, got {v}")
        if v % SIZE_MULTIPLE:
            lo, hi = v // SIZE_MULTIPLE * SIZE_MULTIPLE, (v // SIZE_MULTIPLE + 1) * SIZE_MULTIPLE
            raise OviInputError(f"{name} {v} is not a multiple of {SIZE_MULTIPLE} (Ovi's video latent is 1/16 of the "
                                f"picture and the model groups latents 2x2); use {lo} or {hi}")
        sides.append(v)
    w, h = sides
    if w * h > area_cap:
        side = math.isqrt(target_area or LARGEST_TRAINED_AREA)
        raise OviInputError(
            f"{w}x{h} ({w * h:,} pixels) is too large{' for ' + what if what else ''}: at most {area_cap:,} pixels "
            f"({MAX_AREA_FACTOR:g}x the trained {side}x{side} area) are accepted, since time grows with the square "
            f"of the area; the model works best near {side}x{side} (e.g. {side // 32 * 32}x{side // 32 * 32})")
    return w, h


def latent_shapes(variant, height: int, width: int, *, snap: bool = True) -> LatentShapes:
    """Noise shapes for ``variant`` (a config.Variant or its name) at a requested (height, width).

    With ``snap`` (text-to-video) the request is rescaled to the variant's area first; without it (image-to-video,
    where the image was already resized) height and width must be multiples of 32."""
    if isinstance(variant, str):
        from ovi_core.config import get_variant

        variant = get_variant(variant)
    if snap:
        height, width = video_size_for_variant(height, width, variant.target_area, variant.name)
    else:
        width, height = check_clip_size(width, height, variant.target_area, f"the {variant.name} model")
    return LatentShapes(
        height=height,
        width=width,
        video=(VIDEO_LATENT_CHANNELS, variant.video_latent_length, height // VAE_STRIDE, width // VAE_STRIDE),
        audio=(variant.audio_latent_length, AUDIO_LATENT_CHANNELS),
    )
