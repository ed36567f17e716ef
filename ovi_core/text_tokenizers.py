"""Prompt cleaning and the tokenizers of Ovi's text encoder (umT5): transformers, sentencepiece, bytes (demo).

Behaviour is Ovi's: ftfy + HTML-unescape (twice) + whitespace cleaning; the tokenizers return ids without special
tokens (the encoder appends EOS itself).
Sources: the ``google/umt5-xxl`` folder that comes with Wan's file (transformers ``AutoTokenizer``), a sentencepiece
``spiece.model``, or the ``spiece_model`` byte tensor inside ComfyUI's files (read with sentencepiece directly).
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path

from .errors import OviInputError, WrongFileError
from .umt5_keys import _WHERE_TO_GET

logger = logging.getLogger(__name__)

EOS_ID = 1


def clean_prompt(text: str) -> str:
    """Ovi's 'whitespace' cleaning: ftfy repair, HTML-unescape twice, every whitespace run -> one space, stripped."""
    import ftfy
    import regex  # the `regex` package (a transformers dependency), as the original uses; its \\s is Unicode-aware

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip()


class PromptTokenizer:
    """Text -> token ids without special tokens; the encoder adds EOS itself. Subclasses set eos_id and vocab_size."""

    eos_id: int = EOS_ID
    vocab_size: int = 0
    description: str = ""

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError


class SentencePieceTokenizer(PromptTokenizer):
    """A sentencepiece model used directly (ComfyUI's embedded `spiece_model`, or a `spiece.model` file)."""

    def __init__(self, model_proto: bytes, description: str = "sentencepiece model"):
        import sentencepiece

        self._sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        self.eos_id = self._sp.eos_id()
        if self.eos_id < 0:
            raise WrongFileError(f"the sentencepiece model ({description}) has no end-of-sequence token; "
                                 f"it is not the umT5 tokenizer. {_WHERE_TO_GET}")
        self.vocab_size = self._sp.get_piece_size()
        self.description = description

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(list(ids))


class HFTokenizer(PromptTokenizer):
    """A transformers tokenizer (what Ovi uses: AutoTokenizer on the google/umt5-xxl folder)."""

    def __init__(self, tokenizer, description: str = "transformers tokenizer"):
        if tokenizer.eos_token_id is None:
            raise WrongFileError(f"the tokenizer ({description}) has no end-of-sequence token; it is not the umT5 "
                                 f"tokenizer. {_WHERE_TO_GET}")
        self._tok = tokenizer
        self.eos_id = int(tokenizer.eos_token_id)
        self.vocab_size = len(tokenizer)
        self.description = description

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False, verbose=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids))


class ByteTokenizer(PromptTokenizer):
    """UTF-8 bytes as tokens (id = byte + 3, PAD 0, EOS 1, UNK 2). Needs no file; used by the demo encoder."""

    def __init__(self):
        self.eos_id = EOS_ID
        self.vocab_size = 256 + 3
        self.description = "byte-level demo tokenizer"

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", errors="replace")


def as_prompt_tokenizer(tokenizer) -> PromptTokenizer:
    """Wrap a transformers tokenizer or a sentencepiece.SentencePieceProcessor; a PromptTokenizer is returned as is."""
    if isinstance(tokenizer, PromptTokenizer):
        return tokenizer
    if hasattr(tokenizer, "serialized_model_proto"):  # sentencepiece.SentencePieceProcessor
        return SentencePieceTokenizer(tokenizer.serialized_model_proto(), "sentencepiece processor")
    if callable(tokenizer) and hasattr(tokenizer, "eos_token_id"):
        return HFTokenizer(tokenizer, type(tokenizer).__name__)
    raise OviInputError(f"unsupported tokenizer object {type(tokenizer).__name__}: pass a transformers tokenizer, "
                        "a sentencepiece.SentencePieceProcessor or an ovi_core.text_tokenizers.PromptTokenizer")


def load_tokenizer(path: str | os.PathLike) -> PromptTokenizer:
    """A tokenizer from a folder (google/umt5-xxl: tokenizer.json and/or spiece.model) or a spiece.model file."""
    path = Path(path)
    if path.is_file():
        if path.name == "tokenizer.json":
            return load_tokenizer(path.parent)
        return SentencePieceTokenizer(path.read_bytes(), str(path))
    if not path.is_dir():
        raise WrongFileError(f"tokenizer path `{path}` does not exist. Pass the `google/umt5-xxl` folder (it sits "
                             "next to models_t5_umt5-xxl-enc-bf16.pth in the Wan2.2-TI2V-5B download) or a "
                             "spiece.model file.")
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        try:
            from transformers import AutoTokenizer

            return HFTokenizer(AutoTokenizer.from_pretrained(str(path)), str(path))
        except Exception as exc:  # a broken or unconvertible folder: sentencepiece below may still work
            if not (path / "spiece.model").is_file():
                raise WrongFileError(f"could not load the tokenizer in `{path}`: {exc}") from exc
            logger.info("AutoTokenizer failed on %s (%s); using its spiece.model with sentencepiece", path, exc)
    if (path / "spiece.model").is_file():
        return SentencePieceTokenizer((path / "spiece.model").read_bytes(), str(path / "spiece.model"))
    raise WrongFileError(f"`{path}` holds no tokenizer (no tokenizer.json and no spiece.model). Pass the "
                         "`google/umt5-xxl` folder from the Wan2.2-TI2V-5B download.")


def _find_tokenizer_near(weights_path: Path) -> Path | None:
    """The google/umt5-xxl folder Wan ships next to its encoder file, if there is one."""
    folder = weights_path.parent
    for candidate in (folder / "google" / "umt5-xxl", folder / "umt5-xxl", folder / "umt5_xxl", folder / "tokenizer",
                      folder):
        if (candidate / "tokenizer.json").is_file() or (candidate / "spiece.model").is_file():
            return candidate
    return None
