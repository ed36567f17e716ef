"""umT5 text-encoder files: how they are opened, which key layout they use, and what their keys mean.

Everything decided from a file's key names and shapes lives here: Wan's layout vs transformers' (= ComfyUI's) layout,
the Wan -> transformers rename table, the tensors that carry quantisation data or the tokenizer instead of weights,
the description of a file that is not umT5 at all, and the hyper-parameters read from the weight shapes.
The loader in ``text_encoder.py`` builds the model from these answers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from . import filekinds
from .checkpoint_io import CheckpointFile, sniff_format
from .errors import WrongFileError

logger = logging.getLogger(__name__)

UMT5_XXL_VOCAB = 256384  # embedding rows of the released encoder (the tokenizer uses the first 256300)

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

_HF_PROBE = filekinds.UMT5_HF_PROBE
# the umT5 rows of filekinds.KINDS -> the key layout this loader reads
LAYOUT_OF_KIND = {"umt5_wan": "wan", "umt5_transformers": "transformers", "umt5_scaled_fp8": "transformers"}
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


def _encoder_names(f: CheckpointFile) -> tuple[str, dict[str, str]]:
    """The file's layout ("wan" / "transformers") and a map from its weight keys to transformers names."""
    name = f.path.name
    found = filekinds.identify(filekinds.header_of(f))  # what the file is: the file-kind table
    if found.kind.part != "text_encoder":  # T5 v1.1 (Flux/SD3's t5xxl) too: a row of its own in the table
        raise WrongFileError(f"{filekinds.wrong_part_message(found, 'text_encoder', f'`{name}`')}. {_WHERE_TO_GET}")
    layout, prefix = LAYOUT_OF_KIND[found.kind.name], found.prefix
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
    num_buckets, num_heads = shape("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    return dict(vocab=vocab, d_model=d_model, d_kv=shape(_HF_PROBE)[0] // num_heads,
                d_ff=shape("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")[0], num_layers=num_layers,
                num_heads=num_heads, num_buckets=num_buckets)
