"""Text nodes: Ovi's own text encode, and the adapter that takes core CLIPTextEncode output (umT5 loaded once with
core's CLIPLoader, type "wan", is then shared with Wan workflows)."""

from __future__ import annotations

import logging

import torch

from .convert import TEXT_DIM, conditioning_to_states
from .handles import OviText

log = logging.getLogger(__name__)

EXAMPLE_PROMPT = ("A woman in a sunlit kitchen looks into the camera and says <S>Ovi makes the picture and the sound "
                  "together.<E> She smiles. <AUDCAP>Clear female voice, soft kitchen ambience.<ENDAUDCAP>")


def _defaults() -> tuple[str, str]:
    from ovi_core.sampler import DEFAULT_AUDIO_NEGATIVE_PROMPT, DEFAULT_VIDEO_NEGATIVE_PROMPT

    return DEFAULT_VIDEO_NEGATIVE_PROMPT, DEFAULT_AUDIO_NEGATIVE_PROMPT


def _empty_prompt_message(prompt) -> str | None:
    if not isinstance(prompt, str) or not prompt.strip():
        return ("the prompt is empty: describe the scene, put speech in <S>…<E> and end with the sound, e.g. "
                "<AUDCAP>calm voice, rain<ENDAUDCAP> (720x720_5s) or Audio: calm voice, rain (960 models)")
    return None


class OviTextEncode:
    DESCRIPTION = ("Encodes the prompt and the two negative prompts with umT5-XXL, writing the audio caption the way "
                   "the chosen model variant was trained (<AUDCAP>…<ENDAUDCAP> or a final 'Audio: …').")
    CATEGORY = "Ovi/conditioning"
    RETURN_TYPES = ("OVI_TEXT",)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("The encoded prompt and negatives, for Ovi Sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        from ovi_core.config import VARIANTS

        video_neg, audio_neg = _defaults()
        return {"required": {
            "text_encoder": ("OVI_TEXT_ENCODER", {"tooltip": "From Ovi Text Encoder Loader."}),
            "prompt": ("STRING", {
                "multiline": True, "default": EXAMPLE_PROMPT,
                "tooltip": "What to see and hear. Speech goes in <S>…<E>; the sound description comes last, as "
                           "<AUDCAP>…<ENDAUDCAP> or 'Audio: …' (either spelling is rewritten for the variant)."}),
            "video_negative": ("STRING", {
                "multiline": True, "default": video_neg,
                "tooltip": "What the video should avoid (Ovi's default: jitter, bad hands, blur, distortion)."}),
            "audio_negative": ("STRING", {
                "multiline": True, "default": audio_neg,
                "tooltip": "What the audio should avoid (Ovi's default: robotic, muffled, echo, distorted)."}),
            "variant": (list(VARIANTS), {
                "default": next(iter(VARIANTS)),
                "tooltip": "The variant of the model you sample with (see Ovi Model Loader): it decides how the "
                           "audio caption is written. 720x720_5s: <AUDCAP>…<ENDAUDCAP>; 960 models: 'Audio: …'."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None):
        # missing: ComfyUI reports it; linked (None): its value is known only when it runs (checked in encode)
        if prompt is None:
            return True
        return _empty_prompt_message(prompt) or True

    def encode(self, text_encoder, prompt, video_negative, audio_negative, variant):
        from ovi_core.config import get_variant
        from ovi_core.errors import OviInputError
        from ovi_core.prompt import format_prompt_for_variant

        if (msg := _empty_prompt_message(prompt)) is not None:
            raise OviInputError(msg)
        style = get_variant(variant).caption_style
        encoder = text_encoder.acquire()
        states = encoder.encode_with_negatives(format_prompt_for_variant(prompt, variant), video_negative,
                                               audio_negative)
        pos, vneg, aneg = (s.detach().float().cpu() for s in states)
        return (OviText(pos, vneg, aneg, caption_style=style, source=f"Ovi Text Encode ({variant})"),)


class OviTextFromConditioning:
    DESCRIPTION = ("Uses core CLIPTextEncode output as Ovi text: load umt5_xxl with core's CLIPLoader (type 'wan') "
                   "once and share it with Wan workflows. Write the prompt in the model's caption form yourself.")
    CATEGORY = "Ovi/conditioning"
    RETURN_TYPES = ("OVI_TEXT",)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("The encoded prompt and negatives, for Ovi Sampler.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {
                    "tooltip": "CLIPTextEncode of the prompt, with a umT5-XXL from CLIPLoader (type wan). Both towers "
                               "get it, as in Ovi."}),
            },
            "optional": {
                "video_negative": ("CONDITIONING", {
                    "tooltip": "CLIPTextEncode of the video negative prompt (Ovi's default: jitter, bad hands, blur, "
                               "distortion). Not connected: the audio negative is used, or an all-zero context."}),
                "audio_negative": ("CONDITIONING", {
                    "tooltip": "CLIPTextEncode of the audio negative prompt (Ovi's default: robotic, muffled, echo, "
                               "distorted). Not connected: the video negative is used, or an all-zero context."}),
            },
        }

    def convert(self, positive, video_negative=None, audio_negative=None):
        pos = conditioning_to_states(positive, "positive")
        vneg = conditioning_to_states(video_negative, "video_negative") if video_negative is not None else None
        aneg = conditioning_to_states(audio_negative, "audio_negative") if audio_negative is not None else None
        if vneg is None and aneg is None:
            log.warning("Ovi: no negative conditioning connected; the negative pass uses an all-zero context. Connect "
                        "CLIPTextEncode with Ovi's negatives for the reference behaviour")
            vneg = aneg = torch.zeros(1, TEXT_DIM)
        vneg, aneg = (vneg if vneg is not None else aneg), (aneg if aneg is not None else vneg)
        return (OviText(pos, vneg, aneg, caption_style=None, source="CLIPTextEncode"),)

