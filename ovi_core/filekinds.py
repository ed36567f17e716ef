"""What a weights file is: one table of file kinds, and ``identify`` to tell which row a file matches.

Every loader, ``check-weights`` and every "it looks like ..." error asks this module, so what a file *is* is decided
in one place. A row (``FileKind``) holds:

- ``name`` and ``label``: an id and the words users read in messages ("a Wan2.2 video VAE");
- ``part``: which of Ovi's parts the file serves (``fusion``, ``text_encoder``, ``video_vae``, ``audio_vae``,
  ``vocoder``), or None for a file Ovi cannot use (then ``advice`` says what to do with it);
- ``signature``: regular expressions on key names (``re.match``): every ``all_of`` pattern matches some key, no key
  matches a ``none_of`` pattern; tried on the keys as stored and on the keys under each accepted wrapper ``prefixes``;
- ``rename``: the translation of the file's keys (prefix removed) to our module names, a small pure function, or
  None when the names already are ours (or the part's loader renames: umT5's table lives with the text encoder);
- ``partner``: for a model published as two files (kijai's split Ovi towers), the kind of the other half.

Rows are tried in order and the first match wins, so specific rows come before general ones. Adding a kind is one
row (plus its rename function when its names differ from ours).

A file given where another part's file belongs is refused by ``wrong_part_message`` / ``expect``: what it is and
which loader (node and CLI option, ``LOADER_OF_PART``) takes it, or the row's advice for a file Ovi cannot use.

A file's header (key names, shapes, dtypes; for a torch pickle: the loaded state dict's) is read once per run:
``read_header`` caches by (path, size, modification time).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ovi_core.checkpoint_io import CheckpointFile
from ovi_core.errors import WrongFileError

PARTS = ("fusion", "text_encoder", "video_vae", "audio_vae", "vocoder")


# ---- a file's header ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Header:
    """Key names, shapes and dtypes (as stored: "BF16" or "torch.bfloat16") of a file or an in-memory state dict."""

    name: str  # the file name (or "state dict"), for messages
    shapes: Mapping[str, tuple[int, ...]] = field(repr=False)  # thousands of keys: kept out of reprs
    dtypes: Mapping[str, str] = field(repr=False)
    metadata: Mapping[str, str] = field(default_factory=dict, repr=False)
    format: str = "safetensors"
    path: Path | None = None

    @property
    def keys(self) -> list[str]:
        return list(self.shapes)

    @classmethod
    def of_state_dict(cls, sd: Mapping, name: str = "state dict") -> Header:
        shapes, dtypes = {}, {}
        for k, v in sd.items():
            if isinstance(k, str):
                shapes[k] = tuple(getattr(v, "shape", ()))
                dtypes[k] = str(getattr(v, "dtype", type(v).__name__))
        return cls(name, shapes, dtypes, format="state dict")


_HEADERS: dict[tuple[str, int, int], Header] = {}


def _cache_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def read_header(path: str | os.PathLike, what: str = "checkpoint") -> Header:
    """The header of a file, read once per (path, size, modification time); WrongFileError for unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise WrongFileError(f"{what} file not found: {path}")
    key = _cache_key(path)
    if key not in _HEADERS:
        with CheckpointFile(path, what) as f:
            return header_of(f)
    return _HEADERS[key]


def header_of(f: CheckpointFile) -> Header:
    """The header of a file a loader already opened (kept for the rest of the run, as read_header's)."""
    key = _cache_key(f.path)
    if key not in _HEADERS:
        _HEADERS[key] = Header(f.path.name, {k: f.shape(k) for k in f.keys}, {k: f.dtype(k) for k in f.keys},
                               dict(f.metadata), f.format, f.path)
    return _HEADERS[key]


# ---- key translations (our module names equal the released Ovi keys) ------------------------------------------------
_BLOCK_MODULATION = re.compile(r"^((?:audio_model\.)?blocks\.\d+\.modulation)$")


def kijai_video_to_ovi(key: str) -> str:
    """kijai's video-tower file: bare WanModel names, a block's modulation a plain parameter."""
    return "video_model." + _BLOCK_MODULATION.sub(r"\1.modulation", key)


def kijai_audio_to_ovi(key: str) -> str:
    """kijai's audio-tower file: the released ``audio_model.*`` names, a block's modulation a plain parameter."""
    return _BLOCK_MODULATION.sub(r"\1.modulation", key)


def kijai_single_to_ovi(key: str) -> str:
    """kijai's one-file Ovi (the video tower's bare names next to the audio tower's ``audio_model.*``)."""
    return kijai_audio_to_ovi(key) if key.startswith("audio_model.") else kijai_video_to_ovi(key)


# ---- the table ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signature:
    all_of: tuple[str, ...]
    none_of: tuple[str, ...] = ()
    dims: tuple[tuple[str, int, int], ...] = ()  # (key, axis, size): a tensor's shape, where names cannot tell

    def matches(self, keys: list[str], shape_of: Callable[[str], tuple[int, ...]]) -> bool:
        def has_dim(key: str, axis: int, size: int) -> bool:
            shape = shape_of(key)
            return len(shape) > axis and shape[axis] == size

        return all(any(re.match(p, k) for k in keys) for p in self.all_of) and \
            not any(re.match(p, k) for p in self.none_of for k in keys) and all(has_dim(*d) for d in self.dims)


@dataclass(frozen=True)
class FileKind:
    name: str
    label: str
    part: str | None
    signature: Signature
    prefixes: tuple[str, ...] = ("",)
    rename: Callable[[str], str | None] | None = None
    advice: str = ""
    partner: str | None = None  # the kind holding the other half of the model
    marker: str = ""  # a key that may sit under any wrapper prefix: the prefix in front of it is accepted too


UMT5_WAN_PROBE = "blocks.0.attn.q.weight"  # Wan's models_t5_umt5-xxl-enc-bf16.pth
UMT5_HF_PROBE = "encoder.block.0.layer.0.SelfAttention.q.weight"  # transformers' names (= ComfyUI's files)
OVI_PREFIXES = ("", "model.diffusion_model.", "diffusion_model.", "module.", "model.")
VAE_PREFIXES = ("", "first_stage_model.", "vae.", "model.", "module.")
_OVI_FUSED = Signature((r"video_model\.", r"audio_model\."))
_WAN_VAE = r"(decoder\.(conv_in|upsamples|middle|head)|encoder\.(downsamples|conv1)|conv2\.weight)"

KINDS: tuple[FileKind, ...] = (
    # -- the Ovi model (bf16, fp16, fp8; rkfg's fp8 file is float8 e4m3fn with no scales: the same names)
    FileKind("ovi_fused", "Ovi fusion model (video_model.* / audio_model.* keys)", "fusion", _OVI_FUSED, OVI_PREFIXES),
    # kijai's ComfyUI-WanVideoWrapper files: one file, or the towers in two, each with its own fusion layers (as the
    # file sizes say); either half is renamed with the one-file rule, so keys of the other tower are taken too
    FileKind("kijai_ovi_single", "Ovi in kijai's ComfyUI-WanVideoWrapper layout (one file)", "fusion",
             Signature((r"patch_embedding\.weight", r"audio_model\.patch_embedding\.0\."), (r"video_model\.",)),
             ("", "model.diffusion_model."), kijai_single_to_ovi),
    FileKind("kijai_ovi_video", "video-tower half of Ovi split by kijai's ComfyUI-WanVideoWrapper", "fusion",
             Signature((r"blocks\.0\.cross_attn\.k_fusion\.", r"patch_embedding\.weight"), (r"video_model\.",)),
             ("", "model.diffusion_model."), kijai_single_to_ovi, partner="kijai_ovi_audio"),
    FileKind("kijai_ovi_audio", "audio-tower half of Ovi split by kijai's ComfyUI-WanVideoWrapper", "fusion",
             Signature((r"audio_model\.blocks\.0\.cross_attn\.k_fusion\.", r"audio_model\.patch_embedding\.0\."),
                       (r"video_model\.", r"patch_embedding\.weight")), ("", "model.diffusion_model."),
             kijai_single_to_ovi, partner="kijai_ovi_video"),
    FileKind("ovi_one_tower", "single tower of the Ovi fusion model", None, Signature((r"(video|audio)_model\.",)),
             OVI_PREFIXES, advice="Ovi needs the fused file holding both towers"),
    # -- diffusion models Ovi cannot use
    FileKind("wan_video_dit", "Wan2.x video DiT (for example Wan2.2-TI2V-5B) with no audio tower", None,
             Signature((r"blocks\.\d+\.(self_attn|cross_attn)\.",), (r"blocks\.\d+\.attn\.",)), OVI_PREFIXES,
             advice="Ovi's video tower starts from Wan2.2-5B but the fused file holds both towers"),
    FileKind("diffusers_transformer", "diffusers-format video transformer", None,
             Signature((r"(transformer_blocks\.|condition_embedder\.|blocks\.\d+\.attn1\.)",)),
             advice="Ovi needs its own fused file"),
    FileKind("flux_dit", "Flux-style image diffusion model (double_blocks / single_blocks)", None,
             Signature((r"(double_blocks|single_blocks)\.0\.",)), OVI_PREFIXES, advice="Ovi needs its own fused file"),
    FileKind("sd_unet", "Stable Diffusion-style diffusion-model checkpoint", None,
             Signature((r"model\.diffusion_model\.",)), advice="Ovi needs its own fused file"),
    # -- umT5-XXL, Ovi's text encoder (the loader renames Wan's names; its table is in the text encoder's module)
    FileKind("t5_original", "original (non-gated) T5 encoder", None,
             Signature((r"encoder\.block\.0\.layer\.1\.DenseReluDense\.wi\.weight$",)), marker=UMT5_HF_PROBE,
             advice="Ovi's text encoder is umT5-XXL"),
    # T5 v1.1 (Flux/SD3's t5xxl_fp16.safetensors): umT5's names and gated FFN, but one position bias shared from
    # block 0 where umT5 has one in every block
    FileKind("t5_v11", "T5 v1.1 encoder (e.g. Flux/SD3's t5xxl_fp16.safetensors: one position bias, in block 0)", None,
             Signature((r"encoder\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.weight$",
                        r"encoder\.block\.1\.layer\.0\.SelfAttention\.q\.weight$"),
                       (r"encoder\.block\.[1-9]\d*\.layer\.0\.SelfAttention\.relative_attention_bias\.",)),
             marker=UMT5_HF_PROBE, advice="Ovi needs umT5-XXL, e.g. umt5_xxl_fp16.safetensors"),
    FileKind("umt5_scaled_fp8", "umT5 text-encoder file (ComfyUI scaled fp8)", "text_encoder",
             Signature((UMT5_HF_PROBE.replace(".", r"\."), r"(.*\.)?(scaled_fp8|scale_weight|weight_scale|comfy_quant)$")),
             marker=UMT5_HF_PROBE),
    FileKind("umt5_wan", "umT5 text-encoder file (Wan's .pth layout)", "text_encoder",
             Signature((UMT5_WAN_PROBE.replace(".", r"\."),)), marker=UMT5_WAN_PROBE),
    FileKind("umt5_transformers", "umT5 text-encoder file (transformers layout)", "text_encoder",
             Signature((UMT5_HF_PROBE.replace(".", r"\."),)), marker=UMT5_HF_PROBE),
    FileKind("umt5_any", "umT5/T5 text-encoder file without its attention weights", None,
             Signature((r"(encoder\.block\.\d+\.layer|shared\.weight|token_embedding\.weight)",)),
             advice="the file is incomplete"),
    FileKind("clip_text", "CLIP text encoder (e.g. clip_l.safetensors)", None,
             Signature((r"(text_model\.encoder\.layers\.|transformer\.resblocks\.)",)),
             advice="Ovi's text encoder is umT5-XXL"),
    FileKind("llm", "LLaMA/Qwen/Gemma-style language model", None, Signature((r"model\.layers\.0\.self_attn\.",)),
             advice="Ovi's text encoder is umT5-XXL"),
    FileKind("image_vae", "image VAE (Stable Diffusion / Flux / diffusers)", None,
             Signature((r"(decoder\.up_blocks\.|post_quant_conv\.|decoder\.up\.\d+\.block\.\d+\.norm1\.)",)),
             VAE_PREFIXES, advice="Ovi needs the Wan2.2 video VAE and MMAudio's audio VAE"),
    # -- MMAudio's audio VAE and BigVGAN vocoder
    FileKind("mmaudio_vae_vocoder", "ComfyUI's MMAudio VAE file (VAE + BigVGAN vocoder)", "audio_vae",
             Signature((r"vae\.decoder\.conv_in\.weight$", r"vocoder\.")), ("",)),
    FileKind("mmaudio_vae", "MMAudio audio VAE", "audio_vae",
             Signature((r"(data_mean$|decoder\.conv_out|encoder\.learnable_gain|decoder\.learnable_gain|"
                        r"decoder\.conv_in\.weight$)",), (r"decoder\.middle\.",)), ("", "vae.")),
    FileKind("bigvgan", "BigVGAN vocoder", "vocoder", Signature((r"(conv_pre\.|ups\.\d+|resblocks\.\d+|generator$)",)),
             ("", "vocoder.", "generator.")),
    # -- video VAEs: Wan2.1's has the same names, a 16-channel latent space; the latent channels are decoder.conv1's
    FileKind("wan21_vae", "Wan2.1 video VAE (16-channel latents)", None,
             Signature((_WAN_VAE,), dims=(("decoder.conv1.weight", 1, 16),)), VAE_PREFIXES,
             advice="Ovi needs the 48-channel Wan2.2 VAE"),
    FileKind("wan22_vae", "Wan video VAE (Wan2.2, 48-channel latents)", "video_vae",
             Signature((_WAN_VAE,), dims=(("decoder.conv1.weight", 1, 48),)), VAE_PREFIXES),
    FileKind("wan_vae_other", "Wan-style video VAE without Wan2.2's 48-channel latent decoder", None,
             Signature((_WAN_VAE,)), VAE_PREFIXES, advice="Ovi needs the 48-channel Wan2.2 VAE"),
)
BY_NAME = {k.name: k for k in KINDS}
UNKNOWN = FileKind("unknown", "unknown file", None, Signature(("(?!)",)))


# ---- identify -------------------------------------------------------------------------------------------------------
@dataclass
class Identified:
    """A file (or state dict) matched to a row of KINDS: ``prefix`` is the wrapper prefix its keys carry."""

    kind: FileKind
    header: Header = field(repr=False)  # thousands of keys: not in a log line or a traceback
    prefix: str = ""

    @property
    def name(self) -> str:
        return self.header.name

    def describe(self) -> str:
        """"a Wan2.2 video VAE", "an unknown file (first keys: ...)": for messages."""
        if self.kind is UNKNOWN:
            sample = ", ".join(sorted(self.header.keys)[:3]) or "no tensors at all"
            return f"an unknown file (first keys: {sample})"
        return _article(self.kind.label)

    def key_map(self) -> dict[str, str]:
        """Our module name -> the file's key, for the keys under ``prefix`` (renamed where the kind says)."""
        out = {}
        for k in self.header.keys:
            if k.startswith(self.prefix):
                local = k[len(self.prefix):]
                ours = self.kind.rename(local) if self.kind.rename else local
                if ours is not None:
                    out[ours] = k
        return out


def _article(label: str) -> str:
    return ("an " if label[0].lower() in "aeiou" else "a ") + label


def _under(keys: list[str], prefix: str) -> list[str]:
    return [k[len(prefix):] for k in keys if k.startswith(prefix)] if prefix else keys


def identify(source: str | os.PathLike | Header | Mapping, kinds: Iterable[FileKind] = KINDS) -> Identified:
    """The first row of ``kinds`` whose signature the file's keys match (UNKNOWN when none does).

    source: a path (its header is read once, see read_header), a Header, or an in-memory state dict."""
    if isinstance(source, Header):
        header = source
    elif isinstance(source, Mapping):
        header = Header.of_state_dict(source)
    else:
        header = read_header(source)
    keys = header.keys
    for kind in kinds:
        prefixes = kind.prefixes
        if kind.marker:
            prefixes = tuple(dict.fromkeys(k[: -len(kind.marker)] for k in keys if k.endswith(kind.marker)
                                           and (k == kind.marker or k.endswith("." + kind.marker))))
        for prefix in prefixes:
            sub = _under(keys, prefix)
            if sub and kind.signature.matches(sub, lambda k, p=prefix: header.shapes.get(p + k, ())):
                return Identified(kind, header, prefix)
    return Identified(UNKNOWN, header)


def describe(source) -> str:
    """What a file or state dict looks like, for "X is not a ...: it looks like <this>" messages."""
    return identify(source).describe()


# ---- what each part's file must be, and which loader takes a file of another part ----------------------------------
NEEDED = {"fusion": "an Ovi fused model", "text_encoder": "a umT5 text encoder", "video_vae": "a Wan2.2 video VAE",
          "audio_vae": "an MMAudio audio VAE", "vocoder": "a BigVGAN vocoder"}
LOADER_OF_PART = {"fusion": "the Ovi model loader (CLI: --model)",
                  "text_encoder": "the Ovi text encoder loader (CLI: --text-encoder)",
                  "video_vae": "the Ovi video VAE loader (CLI: --video-vae)",
                  "audio_vae": "the Ovi audio VAE loader as its vae_name (CLI: --audio-vae)",
                  "vocoder": "the Ovi audio VAE loader as its vocoder_name (CLI: --vocoder)"}


def what_to_do(kind: FileKind) -> str:
    """For a file given where it does not belong: "load it with <the loader of its part>", or the row's advice."""
    return f"load it with {LOADER_OF_PART[kind.part]}" if kind.part is not None else kind.advice


def wrong_part_message(found: Identified, part: str, name: str | None = None) -> str:
    """"`name` is not <what part needs>: it looks like <what it is> — <what to do with it>" (no final full stop)."""
    todo = what_to_do(found.kind)
    return (f"{name or found.name} is not {NEEDED[part]}: it looks like {found.describe()}"
            + (f" — {todo}" if todo else ""))


def expect(source, part: str, name: str | None = None, get_it: str = "") -> Identified:
    """The identified file when it serves ``part``; otherwise WrongFileError (wrong_part_message, then ``get_it``).

    source: as identify's; name: the file's name in the message (default: the header's)."""
    found = identify(source)
    if found.kind.part != part:
        raise WrongFileError(wrong_part_message(found, part, name) + (f". {get_it}" if get_it else ""))
    return found


# ---- split models: finding the other half ------------------------------------------------------------------------
_SWAPS = (("video_model", "audio_model"), ("Video", "Audio"), ("video", "audio"), ("VIDEO", "AUDIO"))


def partner_names(name: str) -> list[str]:
    """File names the other half of a split model would have (kijai publishes Wan_2_2_Ovi_video_model_bf16 /
    Wan_2_2_Ovi_audio_model_bf16 and Wan2_2_Ovi_Video_..._KJ / Wan2_2_Ovi_Audio_..._KJ)."""
    out = []
    for a, b in _SWAPS:
        for x, y in ((a, b), (b, a)):
            if x in name:
                cand = name.replace(x, y)
                if cand not in out:
                    out.append(cand)
    return out


def find_partner(found: Identified) -> Identified:
    """The other half of a split model: the partner-named file next to it, else any file next to it of the partner
    kind; WrongFileError naming the expected file when there is none."""
    want = BY_NAME[found.kind.partner]
    path = found.header.path
    folder = path.parent if path is not None else Path(".")
    names = partner_names(found.name)
    candidates = [folder / n for n in names if (folder / n).is_file()]
    if not candidates and folder.is_dir():
        candidates = sorted(p for p in folder.iterdir() if p != path and p.is_file() and p.suffix == path.suffix)
    for cand in candidates:
        try:
            other = identify(cand, (want,))
        except WrongFileError:
            continue
        if other.kind is want:
            return other
    have, miss = ("video", "audio") if found.kind.name.endswith("video") else ("audio", "video")
    expected = " or ".join(f"`{n}`" for n in names) or f"the {miss}-tower file"
    raise WrongFileError(
        f"{found.name} is the {have}-tower half of Ovi as kijai's ComfyUI-WanVideoWrapper publishes it "
        f"(huggingface.co/Kijai/WanVideo_comfy, Ovi/): its {miss}-tower partner {expected} was not found in {folder}. "
        "Download both files into the same folder (the loader joins them), or use the fused model.safetensors from "
        "huggingface.co/chetwinlow1/Ovi")


# ---- dtypes -------------------------------------------------------------------------------------------------------
ST_TO_TORCH = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
               "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
               "BOOL": "bool"}


def torch_dtype_name(stored: str) -> str:
    """"bfloat16" for "BF16" (safetensors) or "torch.bfloat16" (a torch file)."""
    return ST_TO_TORCH.get(stored, stored.removeprefix("torch."))


def torch_dtype(stored: str):
    """The torch dtype of a stored dtype name ("F8_E5M2", "torch.float8_e5m2", ...), None when torch has none."""
    import torch

    dtype = getattr(torch, torch_dtype_name(stored), None)
    return dtype if isinstance(dtype, torch.dtype) else None


def fp8_dtype(dtypes: Iterable[str]):
    """The fp8 torch dtype among stored dtype names (the first one found), or None: what a file's fp8 weights are."""
    from ovi_core.knobs import is_fp8

    return next((d for d in map(torch_dtype, dtypes) if is_fp8(d)), None)


def meta_state_dict(header: Header) -> dict:
    """Every tensor of a header as an empty meta tensor of its shape and dtype (no data read)."""
    import torch

    out = {}
    for k, shape in header.shapes.items():
        name = header.dtypes[k]
        dtype = torch_dtype(name)
        if dtype is None:
            raise WrongFileError(f"{header.name}: tensor {k} has the unknown dtype {name}")
        out[k] = torch.empty(shape, dtype=dtype, device="meta")
    return out


def strip_prefix(sd: Mapping, prefix: str) -> dict:
    """The tensors under ``prefix`` with the prefix removed (``vae.``, ``vocoder.``, ``first_stage_model.``)."""
    return {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}
