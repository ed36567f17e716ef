"""Ovi's text encoder: umT5-XXL, loaded from any of the files users already have.

Math follows Wan's umT5 encoder as used by Ovi (Wan2.2 / character-ai Ovi, Apache-2.0), run through transformers'
UMT5EncoderModel (Apache-2.0), which reproduces it exactly once the keys are renamed. The code here is ours.

Files understood (the layout is read from the key names, never from the file name):
- Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` (``token_embedding.weight``, ``blocks.{i}.attn.q.weight``, ...);
- ComfyUI's ``umt5_xxl_fp16.safetensors`` (transformers names ``shared.weight``, ``encoder.block.{i}...``);
- ComfyUI's scaled fp8 files: float8 weights times a per-layer scale, either the old layout (a ``scaled_fp8`` marker
  and ``<layer>.scale_weight``) or the newer one (``<layer>.comfy_quant`` + ``<layer>.weight_scale``, or a
  ``_quantization_metadata`` header entry). By default those weights stay 1 byte each and are dequantised per call.

Tokenizer: the ``google/umt5-xxl`` folder that comes with Wan's file (transformers ``AutoTokenizer``), a sentencepiece
``spiece.model``, or the ``spiece_model`` byte tensor inside ComfyUI's files (read with sentencepiece directly).

Behaviour is Ovi's: ftfy + HTML-unescape (twice) + whitespace cleaning, EOS appended, no BOS, at most 511 text
tokens + EOS, and each prompt's output trimmed to its real length (text + EOS) -> ``[L_i, 4096]``.
"""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import interrupt
from .checkpoint_io import CheckpointFile, sniff_format
from .errors import OviInputError, WrongFileError

logger = logging.getLogger(__name__)

TEXT_LEN = 512  # tokens the encoder sees per prompt, EOS included
PAD_ID = 0
EOS_ID = 1
UMT5_XXL_VOCAB = 256384  # embedding rows of the released encoder (the tokenizer uses the first 256300)
RELATIVE_MAX_DISTANCE = 128  # not stored in any file; the released value
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

_WHERE_TO_GET = (
    "Ovi's text encoder is umT5-XXL: `models_t5_umt5-xxl-enc-bf16.pth` (with its `google/umt5-xxl` tokenizer folder) "
    "from the Wan2.2-TI2V-5B download, or ComfyUI's `umt5_xxl_fp16.safetensors` / "
    "`umt5_xxl_fp8_e4m3fn_scaled.safetensors` (Comfy-Org/Wan_2.1_ComfyUI_repackaged, models/text_encoders)."
)

# --------------------------------------------------------------------------------------------------------------------
# Key names: Wan's layout -> transformers' layout (which is also ComfyUI's). Data, applied by `rename_key`.
# Note the FFN branch swap: Wan's `gate.0` (the GELU branch) is transformers' `wi_0`, Wan's `fc1` is `wi_1`.
# --------------------------------------------------------------------------------------------------------------------

WAN_TO_TRANSFORMERS: tuple[tuple[str, str], ...] = (
    ("token_embedding.weight", "shared.weight"),
    ("blocks.{i}.norm1.weight", "encoder.block.{i}.layer.0.layer_norm.weight"),
    ("blocks.{i}.attn.q.weight", "encoder.block.{i}.layer.0.SelfAttention.q.weight"),
    ("blocks.{i}.attn.k.weight", "encoder.block.{i}.layer.0.SelfAttention.k.weight"),
    ("blocks.{i}.attn.v.weight", "encoder.block.{i}.layer.0.SelfAttention.v.weight"),
    ("blocks.{i}.attn.o.weight", "encoder.block.{i}.layer.0.SelfAttention.o.weight"),
    ("blocks.{i}.pos_embedding.embedding.weight",
     "encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"),
    ("blocks.{i}.norm2.weight", "encoder.block.{i}.layer.1.layer_norm.weight"),
    ("blocks.{i}.ffn.gate.0.weight", "encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight"),
    ("blocks.{i}.ffn.fc1.weight", "encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight"),
    ("blocks.{i}.ffn.fc2.weight", "encoder.block.{i}.layer.1.DenseReluDense.wo.weight"),
    ("norm.weight", "encoder.final_layer_norm.weight"),
)

_WAN_PROBE = "blocks.0.attn.q.weight"
_HF_PROBE = "encoder.block.0.layer.0.SelfAttention.q.weight"
# tensors that carry quantisation data or the tokenizer, not weights
_AUX_SUFFIXES = (".scale_weight", ".weight_scale", ".weight_scale_2", ".scale_input", ".input_scale", ".comfy_quant")


def rename_key(key: str, table: tuple[tuple[str, str], ...] = WAN_TO_TRANSFORMERS) -> str | None:
    """The transformers (= ComfyUI) name of a Wan-layout key, or None when the table has no entry for it."""
    head, _, tail = key.partition(".")
    if head == "blocks":  # blocks.{i}.rest
        index, _, rest = tail.partition(".")
        if not index.isdigit():
            return None
        for src, dst in table:
            if src.startswith("blocks.{i}.") and src[len("blocks.{i}."):] == rest:
                return dst.replace("{i}", index)
        return None
    for src, dst in table:
        if src == key:
            return dst
    return None


# --------------------------------------------------------------------------------------------------------------------
# Prompt cleaning and tokenizers
# --------------------------------------------------------------------------------------------------------------------


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
                        "a sentencepiece.SentencePieceProcessor or an ovi_core.text_encoder.PromptTokenizer")


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


# --------------------------------------------------------------------------------------------------------------------
# Reading weight files
# --------------------------------------------------------------------------------------------------------------------


def _open_weights(path: Path) -> CheckpointFile:
    """The encoder file (safetensors or a torch .pth), with this loader's messages for files it cannot use."""
    if not path.exists():
        raise WrongFileError(f"text encoder file `{path}` does not exist. {_WHERE_TO_GET}")
    if path.is_dir():
        raise WrongFileError(f"`{path}` is a folder; pass the text encoder file itself. {_WHERE_TO_GET}")
    with open(path, "rb") as fh:
        if fh.read(4) == b"GGUF":
            raise WrongFileError(f"`{path.name}` is a GGUF file; this loader reads .pth and .safetensors. Use "
                                 f"`umt5_xxl_fp8_e4m3fn_scaled.safetensors` for a small download. {_WHERE_TO_GET}")
    try:
        return CheckpointFile(path)
    except WrongFileError as exc:
        if sniff_format(path) == "torch":
            raise
        raise WrongFileError(f"`{path.name}` ({path.stat().st_size:,} bytes) is neither a readable safetensors file "
                             f"nor a PyTorch checkpoint: {exc}") from None


def _describe_foreign_file(keys: list[str]) -> str:
    """What a file without umT5 keys looks like, for the error message."""
    keyset = set(keys)

    def has(fragment):
        return any(fragment in k for k in keys)

    if any(k.startswith(("video_model.", "audio_model.")) for k in keys):
        return "the Ovi fusion model (video_model.* / audio_model.* keys) - load it with the Ovi model loader"
    if has("patch_embedding.weight") or has("blocks.0.self_attn.q.weight"):
        return "a Wan diffusion model (DiT), not its text encoder"
    if has("text_model.encoder.layers.") or has("transformer.resblocks."):
        return "a CLIP text encoder (e.g. clip_l.safetensors)"
    if has("encoder.block.0.layer.1.DenseReluDense.wi.weight"):
        return "an original (non-gated) T5 encoder"
    if has("model.layers.0.self_attn."):
        return "a LLaMA/Qwen/Gemma-style language model"
    if any(k.startswith(("decoder.", "encoder.", "first_stage_model.")) and "conv" in k for k in keys) \
            or "conv1.weight" in keyset or has("quant_conv"):
        return "a VAE (convolution weights such as decoder.conv_in / conv1)"
    if has("conv_pre.") or has("ups.0."):
        return "a vocoder (BigVGAN-style conv_pre/ups keys)"
    sample = ", ".join(sorted(keys)[:5]) or "no tensors at all"
    return f"an unknown model (first keys: {sample})"


# --------------------------------------------------------------------------------------------------------------------
# Scaled fp8: a Linear whose weight stays 1 byte per element
# --------------------------------------------------------------------------------------------------------------------


def dequantize_fp8(weight: torch.Tensor, scale: torch.Tensor | float, dtype: torch.dtype) -> torch.Tensor:
    """float(weight) * scale in `dtype`; a per-tensor scale, or one per output row ([out] or [out, 1])."""
    if isinstance(scale, torch.Tensor) and scale.numel() > 1:
        rows = scale.to(weight.device, torch.float32).reshape(weight.shape[0], *([1] * (weight.ndim - 1)))
        return (weight.float() * rows).to(dtype)
    return weight.to(dtype).mul_(float(scale))  # float8 -> dtype is exact; one rounding in the multiply


class Fp8Linear(nn.Module):
    """Bias-free Linear holding a float8 weight and its scale; dequantised (exactly: float8 values are representable
    in bf16/fp16/fp32) and scaled in the input's dtype on every call, so the weight costs 1 byte per element."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor | float = 1.0):
        super().__init__()
        assert weight.dtype in FP8_DTYPES and weight.ndim == 2
        self.out_features, self.in_features = weight.shape
        self.fp8_dtype = weight.dtype
        # kept as uint8 so that Module.to(dtype) / .half() never converts it
        self.register_buffer("weight_fp8", weight.contiguous().view(torch.uint8))
        scale = torch.as_tensor(scale, dtype=torch.float32)
        if scale.numel() == 1:
            self.scale = float(scale)
            self.register_buffer("row_scale", None)
        elif scale.numel() == self.out_features:  # one scale per output row
            self.scale = 1.0
            self.register_buffer("row_scale", scale.reshape(-1, 1).to(weight.device))
        else:
            raise WrongFileError(f"fp8 scale of shape {tuple(scale.shape)} does not fit a weight of shape "
                                 f"{tuple(weight.shape)}; only per-tensor and per-row scales are supported")
        # transformers' UMT5 FFN casts its input to `wo.weight.dtype` when `weight` is a tensor; with None it does not
        self.weight = None

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_fp8(self.weight_fp8.view(self.fp8_dtype),
                              self.row_scale if self.row_scale is not None else self.scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight={self.fp8_dtype}"


def _quantized_layers(f: CheckpointFile) -> dict[str, tuple[str, str | None]]:
    """file layer name (key without `.weight`) -> (format, scale key or None) for every quantised layer declared."""
    keys = set(f.keys)
    formats: dict[str, str] = {}
    if "_quantization_metadata" in f.metadata:  # newer ComfyUI layout, declared in the header
        try:
            for layer, conf in json.loads(f.metadata["_quantization_metadata"]).get("layers", {}).items():
                formats[layer] = conf.get("format", "")
        except (ValueError, AttributeError) as exc:
            raise WrongFileError(f"`{f.path.name}` has an unreadable _quantization_metadata header ({exc})") from exc
    for k in f.keys:
        if k.endswith(".comfy_quant"):  # newer ComfyUI layout, one JSON byte tensor per layer
            conf = json.loads(bytes(f.get(k).tolist()).decode("utf-8"))
            formats[k[: -len(".comfy_quant")]] = conf.get("format", "")
    if any(k.endswith("scaled_fp8") for k in keys):  # old layout: every layer with a scale_weight is float8
        for k in f.keys:
            if k.endswith(".scale_weight"):
                formats.setdefault(k[: -len(".scale_weight")], "float8_e4m3fn")
    out = {}
    for layer, fmt in formats.items():
        if fmt not in ("float8_e4m3fn", "float8_e5m2"):
            raise WrongFileError(f"`{f.path.name}` layer `{layer}` is quantised as `{fmt}`, which this loader does not "
                                 "support (float8_e4m3fn / float8_e5m2 only). Use umt5_xxl_fp16.safetensors or "
                                 "umt5_xxl_fp8_e4m3fn_scaled.safetensors.")
        scale = next((f"{layer}{s}" for s in (".weight_scale", ".scale_weight") if f"{layer}{s}" in keys), None)
        out[layer] = (fmt, scale)
    return out


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
    embedded_tokenizer: bytes | None = None  # ComfyUI's spiece_model
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
    if tensor.dtype in FP8_DTYPES:
        parent_name, _, child = module_name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, Fp8Linear(tensor, 1.0 if fp8_scale is None else fp8_scale))
        return
    setattr(model.get_submodule(module_name), leaf, nn.Parameter(tensor, requires_grad=False))


_LINEAR_LEAVES = (".q.weight", ".k.weight", ".v.weight", ".o.weight", ".wi_0.weight", ".wi_1.weight", ".wo.weight")


def _encoder_names(f: CheckpointFile) -> tuple[str, dict[str, str]]:
    """The file's layout ("wan" / "transformers") and a map from its weight keys to transformers names."""
    name = f.path.name
    wan = [k[: -len(_WAN_PROBE)] for k in f.keys if k.endswith(_WAN_PROBE)]
    hf = [k[: -len(_HF_PROBE)] for k in f.keys if k.endswith(_HF_PROBE) and not k.startswith("decoder.")]
    if not wan and not hf:
        raise WrongFileError(f"`{name}` is not a umT5 text encoder: it looks like {_describe_foreign_file(f.keys)}. "
                             f"{_WHERE_TO_GET}")
    layout, prefix = ("wan", wan[0]) if wan else ("transformers", hf[0])
    names, ignored = {}, []
    for k in f.keys:
        if not k.startswith(prefix) or k.endswith(_AUX_SUFFIXES) or k.endswith(("scaled_fp8", "spiece_model")):
            continue
        local = k[len(prefix):]
        if layout == "wan":
            target = rename_key(local)
        elif local.startswith(("shared.", "encoder.")) and not local.startswith("encoder.embed_tokens."):
            target = local
        else:
            target = None  # decoder.*, lm_head.*, the tied encoder.embed_tokens copy
        if target is None:
            ignored.append(k)
        else:
            names[k] = target
    tied_copy = prefix + "encoder.embed_tokens.weight"
    if tied_copy in ignored and "shared.weight" not in names.values():  # a file that kept only the tied copy
        names[tied_copy] = "shared.weight"
        ignored.remove(tied_copy)
    if ignored:
        logger.info("text encoder %s: ignoring %d tensors that are not part of the encoder (e.g. %s)",
                    name, len(ignored), ignored[0])
    return layout, names


def _config_from_shapes(f: CheckpointFile, names: dict[str, str], layout: str) -> dict[str, int]:
    """umT5 hyper-parameters read from the weight shapes (no file stores them)."""
    by_name = {v: k for k, v in names.items()}

    def shape(name):
        if name not in by_name:
            raise WrongFileError(f"`{f.path.name}` looks like a {layout}-layout umT5 file but has no tensor for "
                                 f"`{name}`; the file is incomplete or of another model. {_WHERE_TO_GET}")
        return f.shape(by_name[name])

    vocab, d_model = shape("shared.weight")
    num_layers = 1 + max(int(n.split(".")[2]) for n in names.values() if n.startswith("encoder.block."))
    bias = "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias.weight"
    if num_layers > 1 and [bias.format(i) in by_name for i in range(num_layers)] == [True] + [False] * (num_layers - 1):
        raise WrongFileError(
            f"`{f.path.name}` is a T5 v1.1 encoder (one shared position bias, vocabulary {vocab:,}), such as "
            f"t5xxl_fp16.safetensors for Flux/SD3, not umT5 (a position bias in every layer, vocabulary "
            f"{UMT5_XXL_VOCAB:,}). {_WHERE_TO_GET}")
    num_buckets, num_heads = shape(bias.format(0))
    return dict(vocab=vocab, d_model=d_model, d_kv=shape(_HF_PROBE)[0] // num_heads,
                d_ff=shape("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")[0], num_layers=num_layers,
                num_heads=num_heads, num_buckets=num_buckets)


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
            if t.dtype in FP8_DTYPES:
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
        info.embedded_tokenizer = next((f.get(k).numpy().tobytes() for k in f.keys if k.endswith("spiece_model")),
                                       None)

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

    @property
    def output_dim(self) -> int:
        return self.model.config.d_model

    def to(self, device=None, dtype: torch.dtype | None = None) -> OviTextEncoder:
        """Move (e.g. to "cpu" after encoding to free the GPU); fp8 weights stay fp8."""
        self.model.to(device=device, dtype=dtype)
        return self

    def memory_bytes(self) -> int:
        """Bytes held by the encoder's weights (fp8 layers count 1 byte per weight)."""
        tensors = {id(t): t for t in list(self.model.parameters()) + list(self.model.buffers())}
        return sum(t.numel() * t.element_size() for t in tensors.values())

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
