"""The joint sampler node: text (+ an optional start image) -> a video LATENT and an audio LATENT."""

from __future__ import annotations

import logging
import math

from . import bridge
from .convert import audio_latent_to_comfy, check_size, refuse, start_image_to_frames, video_latent_to_comfy

log = logging.getLogger(__name__)

MAX_SEED = 0xFFFFFFFFFFFFFFFF


def _solvers() -> list[str]:
    from ovi_core.sampler import SOLVERS

    return list(SOLVERS)


def encode_start_image(image, video_vae, width: int, height: int):
    """IMAGE -> clean first-frame latent [1, 48, 1, height/16, width/16] (normalised), or None without an image."""
    from ovi_core.errors import OviInputError

    if image is None:
        return None
    if video_vae is None:
        raise OviInputError("a start_image needs a video_vae to encode it: connect Ovi Video VAE Loader to the "
                            "sampler's video_vae input")
    frames = start_image_to_frames(image, width, height)
    return video_vae.acquire().encode(frames)


def _preview_slice(latent):
    """The middle latent frame (what ComfyUI's previewers look at)."""
    mid = latent.shape[2] // 2
    return latent[:, :, mid: mid + 1]


def _warn_about_mismatches(variant, text, width: int, height: int) -> None:
    from ovi_core.sizes import is_far_from_area, snap_to_area

    if text.caption_style is not None and text.caption_style != variant.caption_style:
        log.warning("Ovi: the text was encoded for another variant's caption form than the model (%s); set the "
                    "same variant in Ovi Text Encode", variant.name)
    if is_far_from_area(height, width, variant.target_area):
        log.warning("Ovi: %dx%d is more than 10%% off the %s model's trained area (about %d pixels, e.g. %dx%d); "
                    "expect weaker results", width, height, variant.name, variant.target_area,
                    *snap_to_area(height, width, variant.target_area)[::-1])


class OviSampler:
    DESCRIPTION = ("Generates a clip's video and audio together with Ovi's joint flow-matching sampler; with a start "
                   "image it continues that picture (image-to-video).")
    CATEGORY = "Ovi/sampling"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("video_latent", "audio_latent")
    OUTPUT_TOOLTIPS = ("Wan2.2 video latent [1, 48, frames, H/16, W/16] (ComfyUI layout): Ovi Video Decode, or core "
                       "VAEDecode with wan2.2_vae.",
                       "MMAudio latent [1, 20, length]: Ovi Audio Decode.")
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("OVI_MODEL", {"tooltip": "From Ovi Model Loader."}),
                "text": ("OVI_TEXT", {"tooltip": "From Ovi Text Encode (or Ovi Text From Conditioning)."}),
                "seed": ("INT", {"default": 103, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Noise seed; video and audio noise both come from it (Ovi's default 103)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000,
                                  "tooltip": "Sampling steps (Ovi: 50). One progress tick each."}),
                "solver": (_solvers(), {"default": "unipc",
                                        "tooltip": "unipc (Ovi's default), euler or dpm++ flow solvers."}),
                "shift": ("FLOAT", {"default": 5.0, "min": 0.01, "max": 100.0, "step": 0.1,
                                    "tooltip": "Timestep shift of the flow schedule (Ovi: 5.0)."}),
                "video_guidance": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                             "tooltip": "Classifier-free guidance of the video (Ovi: 4.0; 1 = off)."}),
                "audio_guidance": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                             "tooltip": "Classifier-free guidance of the audio (Ovi: 3.0; 1 = off)."}),
                "slg_layer": ("INT", {"default": 11, "min": -1, "max": 63,
                                      "tooltip": "Skip-layer guidance: the fused block skipped in the negative pass "
                                                 "(Ovi: 11; -1 or 0 = off). Must be below the model's depth."}),
                "width": ("INT", {"default": 704, "min": 32, "max": 4096, "step": 32,
                                  "tooltip": "Clip width in pixels, a multiple of 32. Keep width x height near the "
                                             "variant's area: 720x720_5s ~704x704, 960 models ~960x960 (e.g. 1280x704, "
                                             "704x1280). At most 2.25x the trained area: 1,166,400 pixels for "
                                             "720x720_5s, 2,073,600 for the 960 models."}),
                "height": ("INT", {"default": 704, "min": 32, "max": 4096, "step": 32,
                                   "tooltip": "Clip height in pixels, a multiple of 32 (see width for the size limit)."}),
            },
            "optional": {
                "start_image": ("IMAGE", {"tooltip": "Image-to-video: the first frame (any IMAGE, e.g. LoadImage or "
                                                     "another clip's last frame). Centre-cropped to width x height."}),
                "video_vae": ("OVI_VIDEO_VAE", {"tooltip": "Needed with a start image, to encode it."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        """Before the run: multiples of 32 and at most the largest variant's size bound (the model's own bound is
        checked when it runs). A missing input is left to ComfyUI ("Required input is missing"); a linked one
        arrives as None and is checked when the sampler runs."""
        if width is None or height is None:
            return True
        return refuse(check_size(width, height, what="any Ovi model"))

    def sample(self, model, text, seed, steps, solver, shift, video_guidance, audio_guidance, slg_layer, width,
               height, start_image=None, video_vae=None):
        from ovi_core.errors import OviInputError
        from ovi_core.sampler import PromptEmbeddings, sample_joint
        from ovi_core.sizes import latent_shapes

        if (msg := check_size(width, height, model.variant.target_area, f"the {model.variant.name} model")) is not None:
            raise OviInputError(msg)
        for name, value in (("shift", shift), ("video_guidance", video_guidance), ("audio_guidance", audio_guidance)):
            if not math.isfinite(value):  # NaN passes ComfyUI's min/max checks
                raise OviInputError(f"{name} must be a finite number, got {value!r}; Ovi's defaults are shift 5, "
                                    "video_guidance 4, audio_guidance 3")
        _warn_about_mismatches(model.variant, text, width, height)
        shapes = latent_shapes(model.variant, height, width, snap=False)
        first = encode_start_image(start_image, video_vae, width, height)
        progress = bridge.Progress(steps, bridge.wan22_latent_format())
        net = model.acquire()
        try:
            video, audio = sample_joint(
                net, PromptEmbeddings(text.positive, text.video_negative, text.audio_negative),
                video_shape=shapes.video, audio_shape=shapes.audio, seed=seed, solver=solver, steps=steps,
                shift=shift, video_guidance=video_guidance, audio_guidance=audio_guidance, slg_layer=slg_layer,
                first_frame_latent=first, should_interrupt=bridge.check_interrupt,
                callback=lambda done, total, lat: progress.step(done, _preview_slice(lat.video_denoised)))
        finally:
            model.release()
        out = bridge.intermediate_device()
        return (video_latent_to_comfy(video, out), audio_latent_to_comfy(audio, out))
