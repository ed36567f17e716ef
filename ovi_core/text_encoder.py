"""Ovi's text encoder: umT5-XXL, loaded from any of the files users already have.

Math follows Wan's umT5 encoder as used by Ovi (Wan2.2 / character-ai Ovi, Apache-2.0), run through transformers'
UMT5EncoderModel (Apache-2.0), which reproduces it exactly once the keys are renamed. The code here is ours.

Files understood (the layout is read from the key names, never from the file name; see ``umt5_keys.py``):
- Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` (``token_embedding.weight``, ``blocks.{i}.attn.q.weight``, ...);
- ComfyUI's ``umt5_xxl_fp16.safetensors`` (transformers names ``shared.weight``, ``encoder.block.{i}...``);
- ComfyUI's scaled fp8 files (``fp8_linear.py``). By default those weights stay 1 byte each and are dequantised
  per call.

Tokenizer (``text_tokenizers.py``): the ``google/umt5-xxl`` folder that comes with Wan's file, a sentencepiece
``spiece.model``, or the ``spiece_model`` byte tensor inside ComfyUI's files.

Behaviour is Ovi's: ftfy + HTML-unescape (twice) + whitespace cleaning, EOS appended, no BOS, at most 511 text
tokens + EOS, and each prompt's output trimmed to its real length (text + EOS) -> ``[L_i, 4096]``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from . import interrupt
from .errors import OviInputError, WrongFileError
from .fp8_linear import Fp8Linear, _quantized_layers, dequantize_fp8
from .knobs import is_fp8
from .text_tokenizers import (
    ByteTokenizer,
    PromptTokenizer,
    SentencePieceTokenizer,
    _find_tokenizer_near,
    as_prompt_tokenizer,
    clean_prompt,
    load_tokenizer,
)
from .umt5_keys import _WHERE_TO_GET, UMT5_XXL_VOCAB, _config_from_shapes, _encoder_names, _open_weights

logger = logging.getLogger(__name__)

TEXT_LEN = 512  # tokens the encoder sees per prompt, EOS included
PAD_ID = 0
RELATIVE_MAX_DISTANCE = 128  # not stored in any file; the released value


# --------------------------------------------------------------------------------------------------------------------
# Building the encoder
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class EncoderFileInfo:
    """What the loader found in a text-encoder file."""

    path: str
    layout: str  # "wan" or "transformers"
    weight_dtypes: dict[str, int] = field(default_factory=dict)  # dtype name -> number of tensors
    fp8_layers: int = 0
    fp8_kept: bool = False
    config: dict = field(default_factory=dict)


def umt5_config(vocab_size=UMT5_XXL_VOCAB, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                num_buckets=32):
    """transformers UMT5Config for Wan's umT5 encoder (defaults: the released umT5-XXL), eager attention."""
    from transformers import UMT5Config

    config = UMT5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers, num_heads=num_heads,
        relative_attention_num_buckets=num_buckets, relative_attention_max_distance=RELATIVE_MAX_DISTANCE,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0, tie_word_embeddings=False,
        is_encoder_decoder=False, use_cache=False,
    )
    config._attn_implementation = "eager"  # bit-identical to Wan in float32 (sdpa differs by ~3e-6)
    return config


def _empty_umt5(config) -> nn.Module:
    """UMT5EncoderModel with every tensor on the meta device (allocates nothing)."""
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    return _check_between_layers(model.eval().requires_grad_(False))


def _stop_check(module: nn.Module, args) -> None:
    interrupt.check("encoding the prompt")


def _check_between_layers(model: nn.Module) -> nn.Module:
    """Consult ovi_core.interrupt before every encoder layer: a forward pre-hook on each block, added once per model
    (the hooks stay with the model, so an interrupted call leaves nothing to undo)."""
    blocks = getattr(getattr(model, "encoder", None), "block", None)
    if blocks is not None and not getattr(model, "_ovi_stop_hooks", False):
        for block in blocks:
            block.register_forward_pre_hook(_stop_check)
        model._ovi_stop_hooks = True
    return model


def _set_tensor(model: nn.Module, name: str, tensor: torch.Tensor, fp8_scale: torch.Tensor | None = None) -> None:
    """Put a loaded tensor in place of a meta parameter; a float8 Linear weight replaces its Linear by an Fp8Linear."""
    module_name, _, leaf = name.rpartition(".")
    if is_fp8(tensor.dtype):
        parent_name, _, child = module_name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, Fp8Linear(tensor, 1.0 if fp8_scale is None else fp8_scale))
        return
    setattr(model.get_submodule(module_name), leaf, nn.Parameter(tensor, requires_grad=False))


_LINEAR_LEAVES = (".q.weight", ".k.weight", ".v.weight", ".o.weight", ".wi_0.weight", ".wi_1.weight", ".wo.weight")






def load_umt5_encoder(path: str | os.PathLike, device="cpu", dtype: torch.dtype = torch.bfloat16,
                      keep_fp8: bool = True) -> tuple[nn.Module, EncoderFileInfo]:
    """transformers UMT5EncoderModel from a Wan .pth or a ComfyUI (fp16/bf16/scaled-fp8) file, weights streamed one
    tensor at a time into a model built on the meta device. fp8 Linear weights stay fp8 (Fp8Linear) when keep_fp8,
    otherwise they are dequantised to `dtype` at load. Everything else is converted to `dtype`."""
    path = Path(path)
    with _open_weights(path) as f:
        # 1. layout, names and hyper-parameters, from the keys and shapes alone
        layout, names = _encoder_names(f)
        hp = _config_from_shapes(f, names, layout)
        quantized = _quantized_layers(f)
        info = EncoderFileInfo(str(path), layout, config=hp)

        # 2. an empty model (meta device: nothing allocated), then the tensors streamed in one at a time
        model = _empty_umt5(umt5_config(**{("vocab_size" if k == "vocab" else k): v for k, v in hp.items()}))
        for key, name in names.items():
            interrupt.check("loading the text encoder")
            t = f.get(key)
            dtype_name = str(t.dtype).removeprefix("torch.")
            info.weight_dtypes[dtype_name] = info.weight_dtypes.get(dtype_name, 0) + 1
            scale_key = quantized.get(key.removesuffix(".weight"), (None, None))[1]
            if is_fp8(t.dtype):
                info.fp8_layers += 1
                scale = f.get(scale_key).float() if scale_key else torch.tensor(1.0)
                if keep_fp8 and name.endswith(_LINEAR_LEAVES):
                    _set_tensor(model, name, t.to(device), fp8_scale=scale)
                    continue
                t = dequantize_fp8(t, scale, dtype)
            elif scale_key is not None:  # a declared scale on a non-fp8 tensor (unusual): apply it
                t = t.float() * f.get(scale_key).float()
            _set_tensor(model, name, t.to(device=device, dtype=dtype))
        info.fp8_kept = keep_fp8 and info.fp8_layers > 0

    # 3. checks
    model.encoder.embed_tokens = model.shared  # the tie made on the meta device points at the old tensor
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise WrongFileError(f"`{path.name}` lacks {len(missing)} encoder tensors (e.g. `{missing[0]}`); the file is "
                             f"incomplete or of another model. {_WHERE_TO_GET}")
    logger.info("loaded umT5 encoder from %s (%s layout, %d layers, d_model %d, tensors %s, %d fp8 layers %s)",
                path.name, layout, hp["num_layers"], hp["d_model"], info.weight_dtypes, info.fp8_layers,
                "kept in fp8" if info.fp8_kept else "in " + str(dtype).removeprefix("torch."))
    return model, info


# --------------------------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class TokenizedPrompts:
    input_ids: torch.Tensor  # [B, L] int64, PAD after each prompt's EOS
    attention_mask: torch.Tensor  # [B, L] int64, 1 on text + EOS
    lengths: list[int]  # text tokens + EOS per prompt
    dropped: list[int]  # text tokens cut off per prompt (0 when it fitted)


@torch.inference_mode()
def encode_token_ids(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """Run the encoder on a padded batch and trim each row to its mask length, as Ovi's T5EncoderModel does."""
    device = model.shared.weight.device
    _check_between_layers(model)
    hidden = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).last_hidden_state
    lengths = attention_mask.gt(0).sum(dim=1).tolist()
    return [hidden[i, :n].clone() for i, n in enumerate(lengths)]  # clone: do not keep the padded batch alive


class OviTextEncoder:
    """umT5 encoder + tokenizer with Ovi's prompt handling. `encode(prompts)` -> one [L_i, d_model] tensor per prompt.

    By default the batch is padded to its longest prompt instead of to 512: every padded key is masked, so the real
    rows are the same (within float rounding; see the tests) and short prompts cost far less compute.
    `pad_to_max_length=True` runs exactly the reference's 512-long padded batch.
    """

    def __init__(self, model: nn.Module, tokenizer, *, text_len: int = TEXT_LEN, pad_to_max_length: bool = False,
                 info: EncoderFileInfo | None = None):
        self.model = _check_between_layers(model.eval().requires_grad_(False))
        self.tokenizer = as_prompt_tokenizer(tokenizer)
        self.text_len = text_len
        self.pad_to_max_length = pad_to_max_length
        self.info = info
        rows = model.shared.weight.shape[0]
        if self.tokenizer.vocab_size > rows:
            raise WrongFileError(
                f"the tokenizer ({self.tokenizer.description}) has {self.tokenizer.vocab_size:,} tokens but the text "
                f"encoder's embedding has only {rows:,} rows: they do not belong together (a T5 or CLIP file?). "
                f"{_WHERE_TO_GET}")

    @classmethod
    def from_transformers(cls, model: nn.Module, tokenizer, **kwargs) -> OviTextEncoder:
        """Wrap an already-loaded transformers UMT5EncoderModel and its tokenizer (transformers or sentencepiece)."""
        return cls(model, tokenizer, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> OviTextEncoder:
        """Move (e.g. to "cpu" after encoding to free the GPU); fp8 weights stay fp8."""
        self.model.to(device=device, dtype=dtype)
        return self

    def tokenize(self, prompts: list[str]) -> TokenizedPrompts:
        """Clean, tokenize, cut to text_len - 1 text tokens (with a warning) and append EOS."""
        if isinstance(prompts, str):
            prompts = [prompts]
        limit = self.text_len - 1
        rows, dropped = [], []
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise OviInputError(f"prompt {index} is a {type(prompt).__name__}, expected a string")
            ids = self.tokenizer.encode(clean_prompt(prompt))
            dropped.append(max(0, len(ids) - limit))
            if dropped[-1]:
                lost = self.tokenizer.decode(ids[limit:])
                logger.warning(
                    "prompt %d is %d tokens long; Ovi's text encoder reads at most %d (+ the end token), so the last "
                    "%d tokens were dropped: %r%s", index, len(ids), limit, dropped[-1],
                    lost[:80] + ("..." if len(lost) > 80 else ""),
                    " - this includes the audio caption; shorten the description so the caption fits"
                    if ("Audio:" in lost or "AUDCAP" in lost) else "")
            rows.append(ids[:limit] + [self.tokenizer.eos_id])
        lengths = [len(r) for r in rows]
        width = self.text_len if self.pad_to_max_length else max(lengths, default=1)
        input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, : len(r)] = 1
        return TokenizedPrompts(input_ids, attention_mask, lengths, dropped)

    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        """One [L_i, d_model] tensor per prompt (text tokens + EOS), in the encoder's dtype, on its device."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            return []
        tokens = self.tokenize(prompts)
        return encode_token_ids(self.model, tokens.input_ids, tokens.attention_mask)

    def encode_with_negatives(self, prompt: str, video_negative: str = "", audio_negative: str = ""):
        """Ovi's one call: (prompt, video negative, audio negative) contexts. Warns on prompt tags in the negatives."""
        from .prompt import check_negative_prompt

        check_negative_prompt(video_negative, "video")
        check_negative_prompt(audio_negative, "audio")
        positive, video_neg, audio_neg = self.encode([prompt, video_negative, audio_negative])
        return positive, video_neg, audio_neg


def _resolve_tokenizer(path: Path, tokenizer_path) -> PromptTokenizer:
    """The explicit tokenizer, else the `spiece_model` inside the file, else a google/umt5-xxl folder next to it."""
    if tokenizer_path is not None:
        return load_tokenizer(tokenizer_path)
    with _open_weights(path) as f:  # reads the header / the mmapped index only
        embedded = next((k for k in f.keys if k.endswith("spiece_model")), None)
        if embedded is not None:
            return SentencePieceTokenizer(f.get(embedded).numpy().tobytes(), f"spiece_model inside {path.name}")
        if (near := _find_tokenizer_near(path)) is not None:
            return load_tokenizer(near)
        layout, names = _encoder_names(f)  # a file that is not umT5 at all gets that (more useful) error instead
        _config_from_shapes(f, names, layout)
    raise WrongFileError(
        f"no tokenizer for `{path.name}`: it carries no embedded `spiece_model` and there is no `google/umt5-xxl` "
        f"folder next to it. Either pass tokenizer_path = the `google/umt5-xxl` folder from the Wan2.2-TI2V-5B "
        f"download (it holds spiece.model / tokenizer.json), or use ComfyUI's `umt5_xxl_fp16.safetensors` / "
        f"`umt5_xxl_fp8_e4m3fn_scaled.safetensors`, which carry their own tokenizer.")


def load_text_encoder(path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None, device="cpu",
                      dtype: torch.dtype = torch.bfloat16, *, keep_fp8: bool = True,
                      pad_to_max_length: bool = False) -> OviTextEncoder:
    """Load umT5-XXL from Wan's .pth or ComfyUI's fp16/bf16/scaled-fp8 safetensors, plus its tokenizer.

    tokenizer_path: the google/umt5-xxl folder or a spiece.model. When None: the `spiece_model` tensor embedded in
    ComfyUI's files, else a google/umt5-xxl folder next to the weights file. dtype is the compute dtype (bfloat16 as
    Ovi; float32 for exact checks). keep_fp8: fp8 files keep 1 byte per Linear weight (dequantised per call).
    """
    path = Path(path)
    tokenizer = _resolve_tokenizer(path, tokenizer_path)  # first: a missing tokenizer fails before the big load
    model, info = load_umt5_encoder(path, device=device, dtype=dtype, keep_fp8=keep_fp8)
    logger.info("text encoder tokenizer: %s", tokenizer.description)
    return OviTextEncoder(model, tokenizer, pad_to_max_length=pad_to_max_length, info=info)


def build_demo_text_encoder(seed: int = 0, dtype: torch.dtype = torch.float32) -> OviTextEncoder:
    """A tiny deterministic umT5 (output width 4096, as Ovi's text_dim; 2 layers of width 16 inside) with a byte-level
    tokenizer: no download, builds and encodes in milliseconds, same EOS / 512-token cap / trimming as the real one."""
    config = umt5_config(vocab_size=384, d_model=4096, d_kv=8, d_ff=32, num_layers=2, num_heads=2, num_buckets=32)
    model = _empty_umt5(config)
    gen = torch.Generator().manual_seed(seed)
    for name, p in list(model.named_parameters()):
        if name == "shared.weight":
            t = torch.randn(p.shape, generator=gen)
        elif p.ndim == 1:  # norm scales
            t = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
        elif "relative_attention_bias" in name:
            t = 0.5 * torch.randn(p.shape, generator=gen)
        else:  # Linear [out, in]
            t = torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5
        _set_tensor(model, name, t.to(dtype))
    model.encoder.embed_tokens = model.shared
    return OviTextEncoder(model, ByteTokenizer())
