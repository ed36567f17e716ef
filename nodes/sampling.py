"""The joint sampler node (V3): Ovi's exact sampler on the MODEL; text (OVI_TEXT or CONDITIONING), an optional start
image or joint latent -> a video LATENT, an audio LATENT and the joint audio+video LATENT."""

from __future__ import annotations

import dataclasses
import logging
import math

from . import bridge
from .bridge import io
from .convert import (
    audio_latent_to_comfy,
    check_size,
    joint_latent_parts,
    refuse,
    text_from_conditioning,
    video_latent_from_comfy,
    video_latent_to_comfy,
)
from .handles import OviText, OviTextType, OviVideoVAEType, model_parts

log = logging.getLogger(__name__)

MAX_SEED = 0xFFFFFFFFFFFFFFFF
SYNC_GUIDANCE_TOOLTIP = (
    "Lip-sync knob (sync guidance): one more model pass per step with the video<->audio attention cut, and the "
    "result pushed away from it by this scale: v + s·(v_pos − v_cut). 0 = off (today's numbers exactly, no extra "
    "pass); try 0.5-2. Costs one more forward per step.")
SYNC_CUT_TOOLTIP = (
    "Which fusion direction the sync pass cuts, and so which modality is pushed: both (video and audio), "
    "audio_to_video (the video stops seeing the audio: pushes the video, e.g. lips to the speech), video_to_audio "
    "(the audio stops seeing the video: pushes the audio).")


def _solvers() -> list[str]:
    from ovi_core.sampler import SOLVERS

    return list(SOLVERS)


def sync_cuts() -> list[str]:
    from ovi_core.sampler import SYNC_CUTS

    return list(SYNC_CUTS)


def encode_start_image(image, video_vae, width: int, height: int, target_area: int | None = None):
    """IMAGE -> clean first-frame latent [1, 48, 1, height/16, width/16] (normalised), or None without an image. The
    frame is ovi_core.media.first_frame's, the CLI's (``target_area``: the model's, when it is known)."""
    from ovi_core.errors import OviInputError
    from ovi_core.media import first_frame

    if image is None:
        return None
    if video_vae is None:
        raise OviInputError("a start_image needs a video_vae to encode it: connect Ovi Video VAE Loader to the "
                            "sampler's video_vae input")
    frames = first_frame(image, width, height, target_area, name="start_image")
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


def resolve_text(text, positive, negative):
    """OVI_TEXT, or the positive/negative CONDITIONING (Ovi Text Encode's, or core CLIPTextEncode's) as OVI_TEXT."""
    from ovi_core.errors import OviInputError

    if text is not None:
        return text
    if positive is None:
        raise OviInputError("Ovi Sampler has no text: connect Ovi Text Encode's text output, or its positive and "
                            "negative (or core CLIPTextEncode conditioning with umT5-XXL) to positive / negative")
    pos, vneg, aneg = text_from_conditioning(positive, negative)
    return OviText(pos, vneg, aneg, caption_style=None, source="CONDITIONING")


NATIVE_MASK = "native"  # _joint_parts' verdict for a mask only the native path expresses


def _joint_parts(latent):
    """(raw video [1, 48, F, h, w], audio [1, 20, L], first-frame latent, None or NATIVE_MASK) of a joint LATENT. A
    noise_mask keeping video latent frame 0 is Ovi's image-to-video (that frame is the clean start); any other mask
    (the whole audio or video kept, a leading run of frames/steps: Ovi AV Latent From Parts, Ovi Video To Audio) is
    NATIVE_MASK: sampled by av_nodes.sample_masked (with ComfyUI) on the native path with Ovi's own solver."""
    from ovi_core.errors import OviInputError

    video, audio = joint_latent_parts(latent, "the joint audio+video LATENT (Ovi Empty Latent, LTXVConcatAVLatent or "
                                      "Ovi Sampler's latent output); the separate video / audio latents go to the "
                                      "decoders")
    if video.shape[0] != 1 or audio.shape[0] != 1:
        raise OviInputError(f"latent holds a batch of {video.shape[0]}; Ovi Sampler makes one clip (for batches use "
                            "SamplerCustomAdvanced with Ovi Guider)")
    mask = latent.get("noise_mask")
    if mask is None:
        return video, audio, None
    vmask, amask = mask.unbind() if getattr(mask, "is_nested", False) else (mask, None)
    vmask = vmask.expand_as(video) if vmask.shape[1] == 1 else vmask
    if bool((vmask == 1).all()) and (amask is None or bool((amask == 1).all())):
        return video, audio, None
    if (amask is None or bool((amask == 1).all())) and bool((vmask[:, :, :1] == 0).all()) \
            and bool((vmask[:, :, 1:] == 1).all()):
        return video, audio, video_latent_from_comfy({"samples": video[:, :, :1]}, "latent")
    if bridge.HAVE_COMFY:
        return video, audio, NATIVE_MASK
    raise OviInputError("latent's noise_mask is not one Ovi Sampler takes without ComfyUI: it keeps video latent "
                        "frame 0 (image-to-video) or nothing. Held audio / video (Ovi AV Latent From Parts, Ovi Video "
                        "To Audio) needs ComfyUI: SamplerCustomAdvanced with Ovi Guider, or this sampler inside "
                        "ComfyUI")


def sample_clip(model, text, seed, steps, solver, shift, video_guidance, audio_guidance, slg_layer, width, height,
                start_image=None, video_vae=None, latent=None, sync_guidance=0.0, sync_cut="both"):
    """Ovi's joint sampler -> (video LATENT, audio LATENT, joint LATENT). A joint ``latent`` gives the clip's size
    and length (its values are replaced by noise, as a sampler at denoise 1 does) and may keep video frame 0."""
    from ovi_core.errors import OviInputError
    from ovi_core.sampler import PromptEmbeddings, check_sync, sample_joint
    from ovi_core.sizes import latent_shapes

    check_sync(sync_guidance, sync_cut)
    fusion, variant = model_parts(model)
    first = None
    if latent is not None:
        video, audio, first = _joint_parts(latent)
        if isinstance(first, str) and first == NATIVE_MASK:
            if start_image is not None:
                raise OviInputError("a start_image and a latent whose mask holds audio or video: give the start "
                                    "picture to Ovi AV Latent From Parts (start_image) instead")
            for name, value in (("shift", shift), ("video_guidance", video_guidance),
                                ("audio_guidance", audio_guidance)):
                if not math.isfinite(value):
                    raise OviInputError(f"{name} must be a finite number, got {value!r}")
            if slg_layer >= fusion.cfg.num_layers:
                raise OviInputError(f"slg_layer {slg_layer} is past the model's {fusion.cfg.num_layers} fused blocks")
            log.info("Ovi Sampler: the latent's noise mask holds audio or video: sampling on the native path "
                     "(Ovi's %s solver, kept parts returned bit for bit)", solver)
            from .av_nodes import sample_masked  # ComfyUI only

            return sample_masked(model, text, seed, steps, solver, shift, video_guidance, audio_guidance, slg_layer,
                                 latent, sync_guidance, sync_cut)
        width, height = video.shape[4] * 16, video.shape[3] * 16
        variant = dataclasses.replace(variant, video_latent_length=video.shape[2], audio_latent_length=audio.shape[2])
    if (msg := check_size(width, height, variant.target_area, f"the {variant.name} model")) is not None:
        raise OviInputError(msg)
    for name, value in (("shift", shift), ("video_guidance", video_guidance), ("audio_guidance", audio_guidance)):
        if not math.isfinite(value):  # NaN passes ComfyUI's min/max checks
            raise OviInputError(f"{name} must be a finite number, got {value!r}; Ovi's defaults are shift 5, "
                                "video_guidance 4, audio_guidance 3")
    _warn_about_mismatches(variant, text, width, height)
    shapes = latent_shapes(variant, height, width, snap=False)
    if start_image is not None:
        if first is not None:
            raise OviInputError("both a start_image and a latent whose mask keeps frame 0: connect one of them")
        first = encode_start_image(start_image, video_vae, width, height, variant.target_area)
    progress = bridge.Progress(steps, bridge.wan22_latent_format())
    bridge.load_model(model)
    video, audio = sample_joint(
        fusion, PromptEmbeddings(text.positive, text.video_negative, text.audio_negative),
        video_shape=shapes.video, audio_shape=shapes.audio, seed=seed, solver=solver, steps=steps,
        shift=shift, video_guidance=video_guidance, audio_guidance=audio_guidance, slg_layer=slg_layer,
        first_frame_latent=first, should_interrupt=bridge.check_interrupt, sync_guidance=sync_guidance,
        sync_cut=sync_cut,
        callback=lambda done, total, lat: progress.step(done, _preview_slice(lat.video_denoised)))
    out = bridge.intermediate_device()
    video_latent, audio_latent = video_latent_to_comfy(video, out), audio_latent_to_comfy(audio, out)
    return video_latent, audio_latent, {"samples": bridge.nested((video_latent["samples"], audio_latent["samples"]))}


def _finite_sync(value) -> float:
    from ovi_core.errors import OviInputError

    if value is None:  # an old workflow without the input
        return 0.0
    if not math.isfinite(value):  # NaN passes ComfyUI's min/max checks
        raise OviInputError(f"sync_guidance must be a finite number >= 0, got {value!r} (0 = off)")
    return float(value)


class OviSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviSampler", display_name="Ovi Sampler", category="Ovi/sampling",
            description=("Generates a clip's video and audio together with Ovi's exact joint flow-matching sampler; "
                         "with a start image it continues that picture (image-to-video)."),
            inputs=[
                io.Model.Input("model", tooltip="From Ovi Model Loader (LoRA loaders may sit in between)."),
                io.Int.Input("seed", default=103, min=0, max=MAX_SEED, control_after_generate=True, tooltip=(
                    "Noise seed; video and audio noise both come from it (Ovi's default 103).")),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Sampling steps (Ovi: 50). One progress tick each."),
                io.Combo.Input("solver", options=_solvers(), default="unipc",
                               tooltip="unipc (Ovi's default), euler or dpm++ flow solvers."),
                io.Float.Input("shift", default=5.0, min=0.01, max=100.0, step=0.1,
                               tooltip="Timestep shift of the flow schedule (Ovi: 5.0)."),
                io.Float.Input("video_guidance", default=4.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance of the video (Ovi: 4.0; 1 = off)."),
                io.Float.Input("audio_guidance", default=3.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance of the audio (Ovi: 3.0; 1 = off)."),
                io.Int.Input("slg_layer", default=11, min=-1, max=63, tooltip=(
                    "Skip-layer guidance: the fused block skipped in the negative pass (Ovi: 11; -1 or 0 = off). "
                    "Must be below the model's depth.")),
                io.Int.Input("width", default=704, min=32, max=4096, step=32, tooltip=(
                    "Clip width in pixels, a multiple of 32. Keep width x height near the variant's area: 720x720_5s "
                    "~704x704, 960 models ~960x960 (e.g. 1280x704, 704x1280). At most 2.25x the trained area: "
                    "1,166,400 pixels for 720x720_5s, 2,073,600 for the 960 models.")),
                io.Int.Input("height", default=704, min=32, max=4096, step=32, tooltip=(
                    "Clip height in pixels, a multiple of 32 (see width for the size limit).")),
                OviTextType.Input("text", optional=True, tooltip=(
                    "From Ovi Text Encode (or Ovi Text From Conditioning). Not connected: positive / negative.")),
                io.Image.Input("start_image", optional=True, tooltip=(
                    "Image-to-video: the first frame (any IMAGE, e.g. LoadImage or another clip's last frame). "
                    "Resized whole (bicubic, as the original Ovi and the CLI) when width x height is the size Ovi "
                    "gives this image's aspect ratio; otherwise centre-cropped to width:height first (not "
                    "stretched). Alpha is ignored.")),
                OviVideoVAEType.Input("video_vae", optional=True, tooltip="Needed with a start image, to encode it."),
                io.Conditioning.Input("positive", optional=True, tooltip=(
                    "Instead of text: the prompt as CONDITIONING (Ovi Text Encode's positive, or core CLIPTextEncode "
                    "with umT5-XXL from CLIPLoader type wan).")),
                io.Conditioning.Input("negative", optional=True, tooltip=(
                    "With positive: Ovi Text Encode's negative (video negative + the audio negative inside), or any "
                    "CONDITIONING used for both towers. Not connected: an all-zero context.")),
                io.Latent.Input("latent", optional=True, tooltip=(
                    "The joint audio+video LATENT (Ovi Empty Latent, LTXVConcatAVLatent): sets the clip size and "
                    "length instead of width / height; a noise_mask keeping video frame 0 starts from that frame; "
                    "one holding the audio or the video (Ovi AV Latent From Parts, Ovi Video To Audio) generates "
                    "the other part around it.")),
                io.Float.Input("sync_guidance", default=0.0, min=0.0, max=10.0, step=0.1, optional=True,
                               tooltip=SYNC_GUIDANCE_TOOLTIP),
                io.Combo.Input("sync_cut", options=sync_cuts(), default="both", optional=True, tooltip=SYNC_CUT_TOOLTIP),
            ],
            outputs=[
                io.Latent.Output("video_latent", tooltip=(
                    "Wan2.2 video latent [1, 48, frames, H/16, W/16] (ComfyUI layout): Ovi Video Decode, or core "
                    "VAEDecode with wan2.2_vae.")),
                io.Latent.Output("audio_latent", tooltip="MMAudio latent [1, 20, length]: Ovi Audio Decode."),
                io.Latent.Output("latent", tooltip=(
                    "Both as core's joint audio+video LATENT (NestedTensor): LTXVSeparateAVLatent, core samplers.")),
            ],
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None):
        """Before the run: multiples of 32 and at most the largest variant's size bound (the model's own bound is
        checked when it runs). A missing input is left to ComfyUI ("Required input is missing"); a linked one
        arrives as None and is checked when the sampler runs."""
        if width is None or height is None:
            return True
        return refuse(check_size(width, height, what="any Ovi model"))

    @classmethod
    def execute(cls, model, seed, steps, solver, shift, video_guidance, audio_guidance, slg_layer, width, height,
                text=None, start_image=None, video_vae=None, positive=None, negative=None, latent=None,
                sync_guidance=0.0, sync_cut="both"):
        text = resolve_text(text, positive, negative)
        return io.NodeOutput(*sample_clip(model, text, seed, steps, solver, shift, video_guidance, audio_guidance,
                                          slg_layer, width, height, start_image, video_vae, latent,
                                          _finite_sync(sync_guidance), sync_cut))
