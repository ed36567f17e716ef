"""Ovi's prompt language: parsing, the per-variant caption rewrite (same result as the original engine) and warnings."""

from __future__ import annotations

import logging
import re

import pytest

from ovi_core.errors import OviInputError
from ovi_core.prompt import (
    caption_style_for,
    check_negative_prompt,
    check_prompt,
    format_prompt_for_variant,
    parse_prompt,
    rewrite_caption,
)

# One prompt from each of Ovi's example files (example_prompts/gpt_examples_t2v.csv / gpt_examples_10s_t2v.csv)
EXAMPLE_720 = (
    "A concert stage glows with red and purple lights. A singer in a glittering jacket grips the microphone, sweat "
    "shining on his brow, and shouts, <S>AI declares: humans obsolete now.<E>. The crowd roars in response, fists in "
    "the air. Behind him, a guitarist steps to the mic and adds to say <S>We fight back with courage.<E>. The energy "
    "peaks as the lights flare brighter.. "
    "<AUDCAP>Electric guitar riffs, cheering crowd, shouted male voices.<ENDAUDCAP>"
)
EXAMPLE_960 = (
    "A woman with shoulder-length brown hair addresses the camera from a news studio. She speaks, <S>A single five "
    "second clip can send markets crashing in minutes.<E> She slightly tilts her head as she continues, <S>So what "
    "happens when Ovi gives that chaos ten seconds?<E> Her gaze is direct and engaging throughout. Audio: Clear, "
    "professional female voice with a neutral tone and medium pitch."
)


# The original engine's formatters (ovi/ovi_fusion_engine.py NAME_TO_MODEL_SPECS_MAP), restated as the test oracle.
def _engine_formatter(variant: str, text: str) -> str:
    if variant == "720x720_5s":
        return re.sub(r"Audio:\s*(.*)", r"<AUDCAP>\1<ENDAUDCAP>", text, flags=re.S)
    return re.sub(r"<AUDCAP>(.*?)<ENDAUDCAP>", r"Audio: \1", text, flags=re.S)


REWRITE_CASES = [
    EXAMPLE_720,
    EXAMPLE_960,
    "A man says <S>hi<E>. Audio:   wind and rain\n",
    "A man says <S>hi<E>. Audio:\nmultiline\ncaption",
    "<AUDCAP>one<ENDAUDCAP> middle <AUDCAP>two\nlines<ENDAUDCAP>",
    "No caption here <S>only speech<E>.",
    "Audio: first. Audio: second",
    "<AUDCAP>unclosed caption",
    "",
]


@pytest.mark.parametrize("variant", ["720x720_5s", "960x960_5s", "960x960_10s"])
@pytest.mark.parametrize("prompt", REWRITE_CASES)
def test_rewrite_gives_the_same_text_as_the_original_engine(variant, prompt):
    assert format_prompt_for_variant(prompt, variant) == _engine_formatter(variant, prompt)


def test_examples_convert_between_the_two_caption_forms(caplog):
    with caplog.at_level(logging.INFO, logger="ovi_core.prompt"):
        to_960 = format_prompt_for_variant(EXAMPLE_720, "960x960_10s")
    assert to_960.endswith(". Audio: Electric guitar riffs, cheering crowd, shouted male voices.")
    assert "<AUDCAP>" not in to_960
    assert "expects the audio caption as a final `Audio: …`; rewritten to:" in caplog.text

    to_720 = format_prompt_for_variant(EXAMPLE_960, "720x720_5s")
    assert to_720.endswith(" <AUDCAP>Clear, professional female voice with a neutral tone and medium pitch.<ENDAUDCAP>")


def test_a_prompt_already_in_the_right_form_is_unchanged_and_not_logged(caplog):
    with caplog.at_level(logging.INFO, logger="ovi_core.prompt"):
        assert format_prompt_for_variant(EXAMPLE_720, "720x720_5s") == EXAMPLE_720
        assert format_prompt_for_variant(EXAMPLE_960, "960x960_5s") == EXAMPLE_960
    assert caplog.text == ""


def test_examples_parse_cleanly():
    p = parse_prompt(EXAMPLE_720)
    assert p.speech == ("AI declares: humans obsolete now.", "We fight back with courage.")
    assert p.caption == "Electric guitar riffs, cheering crowd, shouted male voices."
    assert p.caption_style == "audcap" and p.issues == ()
    assert "<S>" not in p.visual_description and "guitar riffs" not in p.visual_description
    assert p.visual_description.startswith("A concert stage glows")

    q = parse_prompt(EXAMPLE_960)
    assert len(q.speech) == 2 and q.caption_style == "audio_colon" and q.issues == ()
    assert q.caption == "Clear, professional female voice with a neutral tone and medium pitch."
    assert q.visual_description.endswith("Her gaze is direct and engaging throughout.")


def test_variant_caption_styles_and_unknown_variant():
    assert caption_style_for("720x720_5s") == "audcap"
    assert caption_style_for("960x960_5s") == caption_style_for("960x960_10s") == "audio_colon"
    with pytest.raises(OviInputError, match="unknown Ovi variant"):
        format_prompt_for_variant("x", "1080p")
    with pytest.raises(OviInputError, match="caption style"):
        rewrite_caption("x", "srt")


def _issues(prompt: str) -> str:
    return "\n".join(check_prompt(prompt))


def test_unclosed_speech_warns_that_the_rest_will_be_spoken(caplog):
    prompt = "He says <S>Hello there. He walks away. Audio: male voice"
    assert "never closed with <E>: Ovi will speak everything after it" in _issues(prompt)
    with caplog.at_level(logging.WARNING, logger="ovi_core.prompt"):
        format_prompt_for_variant(prompt, "960x960_5s")
    assert "never closed" in caplog.text
    assert "not closed before the next <S>" in _issues("<S>one <S>two<E> Audio: x")
    assert "<E> at character 4 has no <S>" in _issues("Hi. <E> Audio: x")


def test_empty_speech_warns():
    assert "speech segment 1 (<S><E>) is empty" in _issues("He opens his mouth <S>  <E>. Audio: silence")


def test_caption_not_at_the_end_warns():
    assert "text follows the audio caption" in _issues("<S>hi<E> <AUDCAP>wind<ENDAUDCAP> and then he leaves.")
    assert "text follows" not in _issues("<S>hi<E>. <AUDCAP>wind<ENDAUDCAP>.")  # trailing punctuation is fine
    assert "speech (<S>…<E>) follows `Audio:`" in _issues("Audio: wind. He says <S>hi<E>")
    assert "inside a <S>…<E> speech segment" in _issues("He says <S>Audio: check one two<E> and waves.")
    assert "2 <AUDCAP> captions" in _issues("<S>a<E> <AUDCAP>x<ENDAUDCAP> <AUDCAP>y<ENDAUDCAP>")
    assert "both an <AUDCAP> caption and an `Audio:` caption" in _issues("<S>a<E> <AUDCAP>x<ENDAUDCAP> Audio: y")
    assert "do not pair up" in _issues("<S>a<E> <AUDCAP>x")
    assert "followed by nothing" in _issues("<S>a<E> Audio:  ")


def test_misspelt_tags_and_missing_structure_warn():
    issues = _issues("She says </S>hello</E>. audio: soft voice")
    assert "'</S>' is not an Ovi tag" in issues and "'</E>' is not an Ovi tag" in issues
    assert "capital A" in issues
    assert "'<s>' is not an Ovi tag" in _issues("<s>hi<E> Audio: x")
    assert "may read the description aloud" in _issues("A cat sits on a mat in the sun.")
    assert "read the description aloud" not in _issues("A cat sits on a mat. Audio: purring")
    assert _issues("A man smiles <3 and says <S>hi<E>. Audio: voice") == ""  # other angle brackets are text


def test_tags_in_negative_prompts_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="ovi_core.prompt"):
        assert check_negative_prompt("jitter, bad hands, blur, distortion", "video") == []
        issues = check_negative_prompt("robotic, <S>mumbling<E>, Audio: echo", "audio")
    assert len(issues) == 1 and "audio negative prompt contains `<E>`, `<S>`, `Audio:`" in issues[0]
    assert "audio negative prompt" in caplog.text
    assert check_negative_prompt("<AUDCAP>noise<ENDAUDCAP>", "video")


def test_non_string_prompt_is_an_input_error():
    with pytest.raises(OviInputError):
        parse_prompt(None)
    with pytest.raises(OviInputError):
        check_negative_prompt(3, "video")
