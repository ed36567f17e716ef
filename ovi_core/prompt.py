"""Ovi's prompt language: speech in <S>…<E>, and an audio caption at the end.

The caption has two spellings and each released model was trained on one of them:
  720x720_5s               ... <AUDCAP>rain on a tin roof, a calm female voice<ENDAUDCAP>
  960x960_5s, 960x960_10s  ... Audio: rain on a tin roof, a calm female voice
`format_prompt_for_variant` rewrites the other spelling into the model's one exactly as the original engine's
per-model formatter does (character-ai Ovi, ovi_fusion_engine.py, Apache-2.0; the code here is ours), but says so in
the log, and warns about the mistakes that make Ovi misbehave (an unclosed <S> makes it speak the rest of the prompt,
tags in a negative prompt, a caption in the middle, misspelt tags). The tags are plain text to the text encoder.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from .config import get_variant
from .errors import OviInputError

logger = logging.getLogger(__name__)

SPEECH_OPEN, SPEECH_CLOSE = "<S>", "<E>"
CAPTION_OPEN, CAPTION_CLOSE = "<AUDCAP>", "<ENDAUDCAP>"
AUDIO_PREFIX = "Audio:"

_TAG = re.compile(r"<S>|<E>|<AUDCAP>|<ENDAUDCAP>")
_AUDCAP_PAIR = re.compile(r"<AUDCAP>(.*?)<ENDAUDCAP>", re.S)
_AUDIO_TO_END = re.compile(r"Audio:\s*(.*)", re.S)  # the first `Audio:` and everything after it
_ANGLE = re.compile(r"<[^<>\n]{1,14}>")
_LOWER_AUDIO = re.compile(r"(?i)\baudio\s*:")
_KNOWN_TAG_WORDS = {"s", "e", "audcap", "endaudcap", "audiocap", "endaudiocap"}


@dataclass(frozen=True)
class ParsedPrompt:
    prompt: str
    speech: tuple[str, ...]  # the text of every <S>…<E>, stripped
    caption: str | None  # the audio caption, stripped (None when there is none)
    caption_style: str | None  # "audcap", "audio_colon", "both" or None
    visual_description: str  # the prompt without speech and caption (what an image model should see)
    issues: tuple[str, ...]  # problems worth a warning


def _short(text: str, n: int = 50) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _speech_spans(text: str) -> tuple[list[tuple[int, int]], list[str]]:
    """(start, end) of every <S>…<E> (tags included) and the problems found while pairing the tags."""
    spans, issues, open_at = [], [], None
    for m in _TAG.finditer(text):
        tag = m.group()
        if tag == SPEECH_OPEN:
            if open_at is not None:
                issues.append(f"<S> at character {open_at} is not closed before the next <S>: close every speech "
                              "with <E>, or Ovi may speak the description that follows")
            open_at = m.start()
        elif tag == SPEECH_CLOSE:
            if open_at is None:
                issues.append(f"<E> at character {m.start()} has no <S> before it")
            else:
                spans.append((open_at, m.end()))
                open_at = None
    if open_at is not None:
        issues.append(f"<S> at character {open_at} is never closed with <E>: Ovi will speak everything after it "
                      f"({_short(text[open_at + 3:])!r}); end the speech with <E>")
    return spans, issues


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Split an Ovi prompt into speech segments, audio caption and visual description, and list its problems."""
    if not isinstance(prompt, str):
        raise OviInputError(f"the prompt must be a string, got {type(prompt).__name__}")
    spans, issues = _speech_spans(prompt)
    speech = tuple(prompt[a + len(SPEECH_OPEN): b - len(SPEECH_CLOSE)].strip() for a, b in spans)
    for i, s in enumerate(speech):
        if not s:
            issues.append(f"speech segment {i + 1} (<S><E>) is empty: remove it or put the words to say inside")

    def in_speech(pos: int) -> bool:
        return any(a <= pos < b for a, b in spans)

    # caption, <AUDCAP> form
    pairs = list(_AUDCAP_PAIR.finditer(prompt))
    opens, closes = prompt.count(CAPTION_OPEN), prompt.count(CAPTION_CLOSE)
    if opens != len(pairs) or closes != len(pairs):
        issues.append("<AUDCAP> and <ENDAUDCAP> do not pair up: write the caption as <AUDCAP>…<ENDAUDCAP> "
                      "(720x720_5s) or as a final `Audio: …` (960x960 models)")
    if len(pairs) > 1:
        issues.append(f"{len(pairs)} <AUDCAP> captions: write one caption, at the end")
    if pairs and prompt[pairs[-1].end():].strip(" \t\n.,;:!"):
        issues.append(f"text follows the audio caption ({_short(prompt[pairs[-1].end():])!r}): the caption must be the "
                      "last thing in the prompt")

    # caption, `Audio:` form (the first `Audio:` starts it and it runs to the end, as the engine reads it)
    colon = prompt.find(AUDIO_PREFIX)
    colon_caption = None
    if colon >= 0:
        colon_caption = prompt[colon + len(AUDIO_PREFIX):].strip()
        if in_speech(colon):
            issues.append("`Audio:` appears inside a <S>…<E> speech segment; the caption is taken to start there. "
                          "Reword the speech (e.g. 'audio -') or the caption will swallow the rest of the prompt")
        elif any(a > colon for a, _ in spans):
            issues.append("speech (<S>…<E>) follows `Audio:`: the caption runs to the end of the prompt, so put "
                          "`Audio: …` after all speech and description")
        if not colon_caption:
            issues.append("`Audio:` is followed by nothing: describe the sound after it or remove it")
    elif _LOWER_AUDIO.search(prompt) and not pairs:
        issues.append(f"{_LOWER_AUDIO.search(prompt).group()!r} is not recognised: the caption marker is `Audio:` "
                      "with a capital A")
    if pairs and colon >= 0:
        issues.append("the prompt has both an <AUDCAP> caption and an `Audio:` caption: keep one")

    # misspelt tags such as </S>, <s>, </E>, <AUDCAP/>
    for m in _ANGLE.finditer(prompt):
        word = re.sub(r"[\s/_-]", "", m.group()[1:-1]).lower()
        if word in _KNOWN_TAG_WORDS and m.group() not in (SPEECH_OPEN, SPEECH_CLOSE, CAPTION_OPEN, CAPTION_CLOSE):
            issues.append(f"{m.group()!r} is not an Ovi tag (they are case-sensitive): speech is <S>…<E>, the "
                          "caption <AUDCAP>…<ENDAUDCAP> or `Audio: …`")

    if not spans and not pairs and colon < 0:
        issues.append("no <S>…<E> speech and no audio caption: Ovi was trained on prompts that have them and may "
                      "read the description aloud; put spoken words in <S>…<E> and describe the sound in a caption")

    if pairs and colon >= 0:
        style, caption = "both", pairs[-1].group(1).strip()
    elif pairs:
        style, caption = "audcap", pairs[-1].group(1).strip()
    elif colon >= 0:
        style, caption = "audio_colon", colon_caption
    else:
        style, caption = None, None

    visual = prompt
    for a, b in reversed(spans):
        visual = visual[:a] + visual[b:]
    visual = _AUDCAP_PAIR.sub("", visual)
    if AUDIO_PREFIX in visual:
        visual = visual[: visual.find(AUDIO_PREFIX)]
    return ParsedPrompt(prompt, speech, caption, style, " ".join(visual.split()), tuple(issues))


def caption_style_for(variant) -> str:
    """"audcap" or "audio_colon" for a variant name or a config.Variant (the style is in config.VARIANTS)."""
    return variant.caption_style if hasattr(variant, "caption_style") else get_variant(variant).caption_style


def rewrite_caption(prompt: str, caption_style: str) -> str:
    """The original engine's per-model rewrite. "audcap": the first `Audio:` and everything after it (leading
    whitespace dropped) become <AUDCAP>…<ENDAUDCAP>. "audio_colon": every <AUDCAP>x<ENDAUDCAP> becomes `Audio: x`."""
    if caption_style == "audcap":
        return _AUDIO_TO_END.sub(lambda m: f"{CAPTION_OPEN}{m.group(1)}{CAPTION_CLOSE}", prompt)
    if caption_style == "audio_colon":
        return _AUDCAP_PAIR.sub(lambda m: f"{AUDIO_PREFIX} {m.group(1)}", prompt)
    raise OviInputError(f"unknown caption style {caption_style!r}; expected 'audcap' or 'audio_colon'")


def check_prompt(prompt: str) -> list[str]:
    """The problems of a (positive) prompt, as messages (nothing is logged)."""
    return list(parse_prompt(prompt).issues)


def format_prompt_for_variant(prompt: str, variant_name) -> str:
    """The prompt in the caption spelling `variant_name` was trained on; logs the rewrite and every problem found."""
    style = caption_style_for(variant_name)
    for issue in parse_prompt(prompt).issues:
        logger.warning("Ovi prompt: %s", issue)
    formatted = rewrite_caption(prompt, style)
    if formatted != prompt:
        wanted = "<AUDCAP>…<ENDAUDCAP>" if style == "audcap" else "a final `Audio: …`"
        name = getattr(variant_name, "name", variant_name)
        logger.info("Ovi prompt: the %s model expects the audio caption as %s; rewritten to: %s",
                    name, wanted, formatted)
    return formatted


def check_negative_prompt(text: str, which: str = "video") -> list[str]:
    """Warn (and return the messages) when a negative prompt carries prompt-language tags: there they are plain text
    that pushes the generation away from, e.g., speech in general."""
    if not isinstance(text, str):
        raise OviInputError(f"the {which} negative prompt must be a string, got {type(text).__name__}")
    found = sorted({m.group() for m in _TAG.finditer(text)} | ({AUDIO_PREFIX} if AUDIO_PREFIX in text else set()))
    issues = []
    if found:
        tags = ", ".join(f"`{t}`" for t in found)
        issues.append(f"the {which} negative prompt contains {tags}; speech tags and audio captions belong in the "
                      "prompt; in a negative prompt list only what to avoid (e.g. 'robotic, muffled, echo')")
    for issue in issues:
        logger.warning("Ovi prompt: %s", issue)
    return issues
