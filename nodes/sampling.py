"""The joint sampler node (V3): Ovi's exact sampler on the MODEL; text (OVI_TEXT or CONDITIONING), an optional start
image or joint latent -> a video LATENT, an audio LATENT and the joint audio+video LATENT."""

from __future__ import annotations

import dataclasses
import logging

from ovi_core import knobs
from ovi_core.errors import OviInputError
from ovi_core.media import first_frame
from ovi_core.sampler import PromptEmbeddings, sample_joint
from ovi_core.sizes import is_far_from_area, latent_shapes, snap_to_area

from . import bridge
from .bridge import io, knob_input
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


def encode_start_image(image, video_vae, width: int, height: int, target_area: int | None = None):
    """IMAGE -> clean first-frame latent [1, 48, 1, height/16, width/16] (normalised), or None without an image. The
    frame is ovi_core.media.first_frame's, the CLI's (``target_area``: the model's, when it is known)."""
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
    if text.caption_style is not None and text.caption_style != variant.caption_style:
        log.warning("Ovi: the text was encoded for another variant's caption form than the model (%s); set the "
                    "same variant in Ovi Text Encode", variant.name)
    if is_far_from_area(height, width, variant.target_area):
        log.warning("Ovi: %dx%d is more than 10%% off the %s model's trained area (about %d pixels, e.g. %dx%d); "
                    "expect weaker results", width, height, variant.name, variant.target_area,
                    *snap_to_area(height, width, variant.target_area)[::-1])


def resolve_text(text, positive, negative):
    """OVI_TEXT, or the positive/negative CONDITIONING (Ovi Text Encode's, or core CLIPTextEncode's) as OVI_TEXT."""
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
                start_image=None, video_vae=None, latent=None, sync_guidance=knobs.SYNC_GUIDANCE.default,
                sync_cut=knobs.SYNC_CUT.default):
    """Ovi's joint sampler -> (video LATENT, audio LATENT, joint LATENT). A joint ``latent`` gives the clip's size
    and length (its values are replaced by noise, as a sampler at denoise 1 does) and may keep video frame 0."""
    fusion, variant = model_parts(model)
    knobs.check_sampling(getattr(getattr(fusion, "cfg", None), "num_layers", None), seed=seed, steps=steps,
                         solver=solver, shift=shift, video_guidance=video_guidance, audio_guidance=audio_guidance,
                         slg_layer=slg_layer, sync_guidance=sync_guidance, sync_cut=sync_cut)
    first = None
    if latent is not None:
        video, audio, first = _joint_parts(latent)
        if isinstance(first, str) and first == NATIVE_MASK:
            if start_image is not None:
                raise OviInputError("a start_image and a latent whose mask holds audio or video: give the start "
                                    "picture to Ovi AV Latent From Parts (start_image) instead")
            log.info("Ovi Sampler: the latent's noise mask holds audio or video: sampling on the native path "
                     "(Ovi's %s solver, kept parts returned bit for bit)", solver)
            from .av_nodes import sample_masked  # ComfyUI only

            return sample_masked(model, text, seed, steps, solver, shift, video_guidance, audio_guidance, slg_layer,
                                 latent, sync_guidance, sync_cut)
        width, height = video.shape[4] * 16, video.shape[3] * 16
        variant = dataclasses.replace(variant, video_latent_length=video.shape[2], audio_latent_length=audio.shape[2])
    if (msg := check_size(width, height, variant.target_area, f"the {variant.name} model")) is not None:
        raise OviInputError(msg)
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


class OviSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviSampler", display_name="Ovi Sampler", category="Ovi/sampling",
            description=("Generates a clip's video and audio together with Ovi's exact joint flow-matching sampler; "
                         "with a start image it continues that picture (image-to-video)."),
            inputs=[
                io.Model.Input("model", tooltip="From Ovi Model Loader (LoRA loaders may sit in between)."),
                knob_input(knobs.SEED, control_after_generate=True),
                knob_input(knobs.STEPS, extra="One progress tick each."),
                knob_input(knobs.SOLVER),
                knob_input(knobs.SHIFT),
                knob_input(knobs.VIDEO_GUIDANCE),
                knob_input(knobs.AUDIO_GUIDANCE),
                knob_input(knobs.SLG_LAYER),
                knob_input(knobs.WIDTH, extra=(
                    "Keep width x height near the variant's area: 720x720_5s ~704x704, 960 models ~960x960 (e.g. "
                    "1280x704, 704x1280). At most 2.25x the trained area: 1,166,400 pixels for 720x720_5s, 2,073,600 "
                    "for the 960 models.")),
                knob_input(knobs.HEIGHT, extra="See width for the size limit."),
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
                knob_input(knobs.SYNC_GUIDANCE, extra="Costs one more forward per step.", optional=True),
                knob_input(knobs.SYNC_CUT, optional=True),
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
                sync_guidance=knobs.SYNC_GUIDANCE.default, sync_cut=knobs.SYNC_CUT.default):
        if sync_guidance is None:  # an old workflow without the input
            sync_guidance = knobs.SYNC_GUIDANCE.default
        text = resolve_text(text, positive, negative)
        return io.NodeOutput(*sample_clip(model, text, seed, steps, solver, shift, video_guidance, audio_guidance,
                                          slg_layer, width, height, start_image, video_vae, latent,
                                          sync_guidance, sync_cut))
