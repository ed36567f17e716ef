"""Text nodes: Ovi's own text encode, and the adapter that takes core CLIPTextEncode output (umT5 loaded once with
core's CLIPLoader, type "wan", is then shared with Wan workflows)."""

from __future__ import annotations

import logging

from ovi_core import knobs
from ovi_core.config import get_variant
from ovi_core.errors import OviInputError
from ovi_core.prompt import format_prompt_for_variant

from .bridge import io, knob_input
from .convert import AUDIO_CONTEXT_KEY, states_to_conditioning, text_from_conditioning
from .handles import OviText, OviTextEncoderType, OviTextType

log = logging.getLogger(__name__)

EXAMPLE_PROMPT = ("A woman in a sunlit kitchen looks into the camera and says <S>Ovi makes the picture and the sound "
                  "together.<E> She smiles. <AUDCAP>Clear female voice, soft kitchen ambience.<ENDAUDCAP>")


def _empty_prompt_message(prompt) -> str | None:
    if not isinstance(prompt, str) or not prompt.strip():
        return ("the prompt is empty: describe the scene, put speech in <S>…<E> and end with the sound, e.g. "
                "<AUDCAP>calm voice, rain<ENDAUDCAP> (720x720_5s) or Audio: calm voice, rain (960 models)")
    return None


KSAMPLER_NOTE = (f"With core KSampler, its cfg and this negative apply to both modalities (Ovi uses "
                 f"{knobs.VIDEO_GUIDANCE.reference_value} for the video and {knobs.AUDIO_GUIDANCE.reference_value} for "
                 "the audio: use Ovi Guider for separate values).")


def encode_text(text_encoder, prompt, video_negative, audio_negative, variant) -> OviText:
    """The prompt (written in the variant's caption form) and both negatives through umT5-XXL."""
    if (msg := _empty_prompt_message(prompt)) is not None:
        raise OviInputError(msg)
    style = get_variant(variant).caption_style
    encoder = text_encoder.acquire()
    states = encoder.encode_with_negatives(format_prompt_for_variant(prompt, variant), video_negative, audio_negative)
    pos, vneg, aneg = (s.detach().float().cpu() for s in states)
    return OviText(pos, vneg, aneg, caption_style=style, source=f"Ovi Text Encode ({variant})")


def text_conditionings(text: OviText) -> tuple[list, list, list]:
    """OVI_TEXT -> core CONDITIONING: positive, negative (the video negative carrying the audio negative for the
    audio tower: one negative pass, each tower its own negative, as Ovi), audio negative (for Ovi Guider)."""
    return (states_to_conditioning(text.positive),
            states_to_conditioning(text.video_negative, **{AUDIO_CONTEXT_KEY: states_to_conditioning(
                text.audio_negative)[0][0]}),
            states_to_conditioning(text.audio_negative))


class OviTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviTextEncode", display_name="Ovi Text Encode", category="Ovi/conditioning",
            description=("Encodes the prompt and the two negative prompts with umT5-XXL, writing the audio caption the "
                         "way the chosen model variant was trained (<AUDCAP>…<ENDAUDCAP> or a final 'Audio: …')."),
            inputs=[
                OviTextEncoderType.Input("text_encoder", tooltip="From Ovi Text Encoder Loader."),
                io.String.Input("prompt", multiline=True, default=EXAMPLE_PROMPT, tooltip=(
                    "What to see and hear. Speech goes in <S>…<E>; the sound description comes last, as "
                    "<AUDCAP>…<ENDAUDCAP> or 'Audio: …' (either spelling is rewritten for the variant).")),
                knob_input(knobs.VIDEO_NEGATIVE, multiline=True),
                knob_input(knobs.AUDIO_NEGATIVE, multiline=True),
                knob_input(knobs.VARIANT, extra=(
                    "The variant of the model you sample with (see Ovi Model Loader): it decides how the audio "
                    "caption is written. 720x720_5s: <AUDCAP>…<ENDAUDCAP>; 960 models: 'Audio: …'.")),
            ],
            outputs=[
                OviTextType.Output("text", tooltip="The encoded prompt and negatives, for Ovi Sampler."),
                io.Conditioning.Output("positive", tooltip=(
                    "The prompt as core CONDITIONING [1, 512, 4096]: Ovi Sampler, core KSampler, Ovi Guider.")),
                io.Conditioning.Output("negative", tooltip=(
                    "The video negative, carrying the audio negative for the audio tower: KSampler's negative or "
                    "Ovi Guider's video_negative. " + KSAMPLER_NOTE)),
                io.Conditioning.Output("audio_negative", tooltip="The audio negative alone, for Ovi Guider."),
            ],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        # missing: ComfyUI reports it; linked (None): its value is known only when it runs (checked in execute)
        if prompt is None:
            return True
        return _empty_prompt_message(prompt) or True

    @classmethod
    def execute(cls, text_encoder, prompt, video_negative, audio_negative, variant):
        text = encode_text(text_encoder, prompt, video_negative, audio_negative, variant)
        return io.NodeOutput(text, *text_conditionings(text))


class OviTextFromConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviTextFromConditioning", display_name="Ovi Text From Conditioning", category="Ovi/conditioning",
            description=("Uses core CLIPTextEncode output as Ovi text: load umt5_xxl with core's CLIPLoader (type "
                         "'wan') once and share it with Wan workflows. Write the prompt in the model's caption form "
                         "yourself."),
            inputs=[
                io.Conditioning.Input("positive", tooltip=(
                    "CLIPTextEncode of the prompt, with a umT5-XXL from CLIPLoader (type wan). Both towers get it, "
                    "as in Ovi.")),
                io.Conditioning.Input("video_negative", optional=True, tooltip=(
                    f"CLIPTextEncode of the video negative prompt (Ovi's default: {knobs.VIDEO_NEGATIVE.default}). "
                    "Not connected: the audio negative is used, or an all-zero context.")),
                io.Conditioning.Input("audio_negative", optional=True, tooltip=(
                    f"CLIPTextEncode of the audio negative prompt (Ovi's default: {knobs.AUDIO_NEGATIVE.default}). "
                    "Not connected: the video negative is used, or an all-zero context.")),
            ],
            outputs=[OviTextType.Output("text", tooltip="The encoded prompt and negatives, for Ovi Sampler.")],
        )

    @classmethod
    def execute(cls, positive, video_negative=None, audio_negative=None):
        pos, vneg, aneg = text_from_conditioning(positive, video_negative, audio_negative)
        return io.NodeOutput(OviText(pos, vneg, aneg, caption_style=None, source="CLIPTextEncode"))
