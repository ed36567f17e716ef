"""Finding Ovi's weight files: the reference's download folder, ComfyUI's models folders, or explicit paths.

Ovi needs five files (plus the umT5 tokenizer when the text encoder file does not carry one):

    part           reference download (ckpts/...)                  ComfyUI models/...
    fused model    Ovi/model.safetensors (or _960x960, _960x960_10s) ovi/ or diffusion_models/
    text encoder   Wan2.2-TI2V-5B/models_t5_umt5-xxl-enc-bf16.pth     text_encoders/umt5_xxl_fp16.safetensors
    tokenizer      Wan2.2-TI2V-5B/google/umt5-xxl/                     (inside ComfyUI's umt5 files)
    video VAE      Wan2.2-TI2V-5B/Wan2.2_VAE.pth                       vae/wan2.2_vae.safetensors
    audio VAE      MMAudio/ext_weights/v1-16.pth                       vae/ or mmaudio/
    vocoder        MMAudio/ext_weights/best_netG.pt                    vae/ or mmaudio/

The tables below are data; ``find_in_reference_folder`` and ``find_in_comfy_models`` only apply them. A missing
file raises MissingWeightsError naming the file, the folders searched and where to download it.
``check_weight_files`` reads what each found file holds (through the loaders' own checks, on the meta device where
the header suffices) and says what it is or what is wrong with it: truncated, another model, missing keys, dtype.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ovi_core import filekinds
from ovi_core.config import FP8_FILENAME, VARIANTS, Variant, get_variant
from ovi_core.errors import OviInputError, WrongFileError

logger = logging.getLogger(__name__)

LABELS = {
    "fusion": "fused Ovi model",
    "text_encoder": "umT5-XXL text encoder",
    "tokenizer": "umT5 tokenizer",
    "video_vae": "Wan2.2 video VAE",
    "audio_vae": "MMAudio 16 kHz audio VAE",
    "vocoder": "BigVGAN vocoder",
}
WHERE_TO_GET = {
    "fusion": "huggingface.co/chetwinlow1/Ovi (model.safetensors = 720x720_5s, model_960x960.safetensors, "
              "model_960x960_10s.safetensors; fp8: huggingface.co/rkfg/Ovi-fp8_quantized)",
    "text_encoder": "huggingface.co/Wan-AI/Wan2.2-TI2V-5B (models_t5_umt5-xxl-enc-bf16.pth with its google/umt5-xxl "
                    "tokenizer folder), or ComfyUI's umt5_xxl_fp16.safetensors (Comfy-Org/Wan_2.1_ComfyUI_repackaged)",
    "tokenizer": "huggingface.co/Wan-AI/Wan2.2-TI2V-5B (the google/umt5-xxl folder)",
    "video_vae": "huggingface.co/Wan-AI/Wan2.2-TI2V-5B (Wan2.2_VAE.pth), or ComfyUI's wan2.2_vae.safetensors "
                 "(Comfy-Org/Wan_2.2_ComfyUI_Repackaged)",
    "audio_vae": "huggingface.co/hkchengrex/MMAudio (ext_weights/v1-16.pth)",
    "vocoder": "huggingface.co/hkchengrex/MMAudio (ext_weights/best_netG.pt)",
}

# The reference's download folder (download_weights.py): part -> (sub-folder, file names in order of preference).
REFERENCE_LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "text_encoder": ("Wan2.2-TI2V-5B", ("models_t5_umt5-xxl-enc-bf16.pth",)),
    "tokenizer": ("Wan2.2-TI2V-5B", ("google/umt5-xxl",)),
    "video_vae": ("Wan2.2-TI2V-5B", ("Wan2.2_VAE.pth",)),
    "audio_vae": ("MMAudio/ext_weights", ("v1-16.pth",)),
    "vocoder": ("MMAudio/ext_weights", ("best_netG.pt",)),
}
REFERENCE_FUSION_FOLDER = "Ovi"

# ComfyUI's models folder: part -> (sub-folders in order, file names in order of preference).
COMFY_LAYOUT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "text_encoder": (("text_encoders", "clip"), (
        "umt5_xxl_fp16.safetensors", "umt5-xxl-enc-bf16.safetensors", "models_t5_umt5-xxl-enc-bf16.pth",
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "umt5-xxl-enc-fp8_e4m3fn.safetensors")),
    "video_vae": (("vae",), (
        "wan2.2_vae.safetensors", "Wan2.2_VAE.pth", "Wan2_2_VAE_bf16.safetensors", "Wan2_2_VAE_fp32.safetensors")),
    "audio_vae": (("mmaudio", "vae", "ovi"), (
        "v1-16.pth", "mmaudio_vae_16k_fp32.safetensors", "mmaudio_vae_16k_bf16.safetensors",
        "mmaudio_vae_16k_fp16.safetensors")),
    "vocoder": (("mmaudio", "vae", "ovi"), (
        "best_netG.pt", "mmaudio_vocoder_bigvgan_best_netG_fp32.safetensors",
        "mmaudio_vocoder_bigvgan_best_netG_bf16.safetensors", "mmaudio_vocoder_bigvgan_best_netG_fp16.safetensors")),
}
COMFY_FUSION_FOLDERS = ("ovi", "diffusion_models", "unet")
FUSION_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


class MissingWeightsError(WrongFileError):
    """One or more weight files were not found; the message lists each with where it was looked for."""


@dataclass(frozen=True)
class OviWeightPaths:
    """The files of one Ovi setup. tokenizer None: the text encoder file carries its own, or it sits next to it."""

    fusion: Path
    text_encoder: Path
    video_vae: Path
    audio_vae: Path
    vocoder: Path | None  # None: the audio VAE file carries the vocoder (ComfyUI's single MMAudio file)
    tokenizer: Path | None = None
    variant: Variant | None = None  # None: the fused file tells (it was named, not found by its variant's name)

    def with_overrides(self, **paths) -> OviWeightPaths:
        """A copy with some paths replaced (None values are ignored)."""
        given = {k: Path(v) for k, v in paths.items() if v is not None and k != "variant"}
        return replace(self, **given)

    def describe(self) -> str:
        return "\n".join(f"  {LABELS[f.name]:<26} {getattr(self, f.name)}" for f in fields(self)
                         if f.name != "variant" and getattr(self, f.name) is not None)


def missing_message(part: str, looked_for: list[str] | str, where: list[Path] | Path | str) -> str:
    names = looked_for if isinstance(looked_for, str) else " or ".join(looked_for)
    if isinstance(where, (list, tuple)):
        where = ", ".join(str(w) for w in where)
    return f"{LABELS[part]}: looked for {names} in {where} — get it from {WHERE_TO_GET[part]}"


def raise_if_missing(problems: list[str]) -> None:
    if problems:
        raise MissingWeightsError("Ovi weights not found: " + "; ".join(problems))


def check_paths(paths: OviWeightPaths) -> None:
    """MissingWeightsError for every file in ``paths`` that does not exist."""
    problems = []
    for part in (*filekinds.PARTS, "tokenizer"):
        p = getattr(paths, part)
        if p is not None and not p.exists():
            problems.append(missing_message(part, p.name, p.parent.resolve()))
    raise_if_missing(problems)


def _variant_list(variant: str | Variant | None, fp8: bool) -> list[Variant]:
    if variant is not None:
        v = get_variant(variant)
        if fp8 and v.name != "720x720_5s":
            raise OviInputError(f"the fp8 file ({FP8_FILENAME}) exists only for the 720x720_5s model, not {v.name}")
        return [v]
    return [VARIANTS["720x720_5s"]] if fp8 else list(VARIANTS.values())


def find_in_reference_folder(root: str | os.PathLike, variant: str | Variant | None = None, fp8: bool = False,
                             skip: frozenset[str] = frozenset()) -> OviWeightPaths:
    """The files of a folder laid out like the reference's download (``ckpts/``: Ovi/, Wan2.2-TI2V-5B/, MMAudio/).

    variant None: the first fused file found in the order 720x720_5s, 960x960_5s, 960x960_10s.
    skip: parts given elsewhere (explicit paths), not looked for; they come back as None (a skipped fused file's
    variant too, unless one was asked for: the file given will tell)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingWeightsError(f"the weights folder {root} does not exist (expected the reference's download "
                                  "folder with Ovi/, Wan2.2-TI2V-5B/ and MMAudio/ext_weights/ inside)")
    if (root / "ckpts").is_dir() and not (root / REFERENCE_FUSION_FOLDER).is_dir():
        root = root / "ckpts"  # the Ovi repository root was given
    problems: list[str] = []
    found: dict[str, Path | None] = {}

    candidates = _variant_list(variant, fp8)
    names = [FP8_FILENAME if fp8 else v.filename for v in candidates]
    fusion_dir = root / REFERENCE_FUSION_FOLDER
    hits = [(v, fusion_dir / n) for v, n in zip(candidates, names, strict=True) if (fusion_dir / n).is_file()]
    if "fusion" in skip:
        chosen_variant, found["fusion"] = (None if variant is None else candidates[0]), None  # the named file tells
    elif hits:
        chosen_variant, found["fusion"] = hits[0]
        if variant is None and len(candidates) > 1:
            logger.info("using the %s model (%s); pass a variant to choose another", chosen_variant.name, hits[0][1].name)
    else:
        chosen_variant = candidates[0]
        problems.append(missing_message("fusion", names, fusion_dir))

    for part, (sub, file_names) in REFERENCE_LAYOUT.items():
        if part in skip:
            found[part] = None
            continue
        folder = root / sub
        hit = next((folder / n for n in file_names if (folder / n).exists()), None)
        if hit is None and part != "tokenizer":
            problems.append(missing_message(part, list(file_names), folder))
        found[part] = hit
    raise_if_missing(problems)
    return OviWeightPaths(variant=chosen_variant, **found)


def _files_under(folder: Path, depth: int = 2):
    """Files in ``folder`` and its sub-folders down to ``depth`` levels, sorted, following symlinks."""
    if not folder.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        rel_depth = len(Path(dirpath).relative_to(folder).parts)
        if rel_depth >= depth:
            dirnames[:] = []
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _fusion_candidates(models: Path, variants: list[Variant], fp8: bool) -> tuple[list[tuple[Variant, Path]], list[str]]:
    """Fused Ovi files under ovi/, diffusion_models/, unet/ whose header holds both towers, per wanted variant."""
    from ovi_core.weights import check_is_fusion_checkpoint, detect_variant, inspect_checkpoint

    exact = {FP8_FILENAME} if fp8 else {v.filename for v in variants}
    rejected: list[str] = []
    hits: list[tuple[Variant, Path]] = []
    seen: set[frozenset[Path]] = set()
    for sub in COMFY_FUSION_FOLDERS:
        for path in _files_under(models / sub):
            name = path.name
            if not name.endswith(FUSION_SUFFIXES) or (name not in exact and "ovi" not in name.lower()):
                continue
            if fp8 and name != FP8_FILENAME and "fp8" not in name.lower():
                continue
            try:
                info = inspect_checkpoint(path)
                check_is_fusion_checkpoint(info)
            except WrongFileError as exc:
                rejected.append(f"{path.name}: {str(exc).split(';')[0][:160]}")
                logger.debug("skipping %s: %s", path, exc)
                continue
            halves = frozenset([info.path.resolve(), *(p.resolve() for p in info.files.values())])
            if halves in seen:  # the other half of a split model already found
                continue
            seen.add(halves)
            name_variant, _ = detect_variant(info)
            for v in variants:
                if v.name == name_variant:
                    hits.append((v, path))
    order = {v.name: i for i, v in enumerate(variants)}
    hits.sort(key=lambda vp: order[vp[0].name])
    return hits, rejected


def _carries_vocoder(path: Path | None) -> bool:
    """True for a safetensors audio VAE file that also holds the vocoder (ComfyUI's MMAudio VAE + vocoder file)."""
    if path is None or path.suffix != ".safetensors":
        return False
    try:
        return filekinds.identify(path).kind.name == "mmaudio_vae_vocoder"
    except WrongFileError:
        return False


def find_in_comfy_models(models_dir: str | os.PathLike, variant: str | Variant | None = None, fp8: bool = False,
                         skip: frozenset[str] = frozenset()) -> OviWeightPaths:
    """The files in a ComfyUI ``models/`` folder (the fused model in ovi/ or diffusion_models/, the encoder in
    text_encoders/, the VAEs and vocoder in vae/ or mmaudio/). skip: as find_in_reference_folder.

    An MMAudio VAE file that carries the vocoder too (``vae.*`` + ``vocoder.*`` keys) needs no vocoder file."""
    models = Path(models_dir).expanduser()
    if not models.is_dir():
        raise MissingWeightsError(f"the ComfyUI models folder {models} does not exist")
    if (models / "models").is_dir() and not (models / "diffusion_models").is_dir():
        models = models / "models"  # the ComfyUI root was given
    problems: list[str] = []
    found: dict[str, Path | None] = {"tokenizer": None}

    candidates = _variant_list(variant, fp8)
    hits, rejected = ([], []) if "fusion" in skip else _fusion_candidates(models, candidates, fp8)
    if "fusion" in skip:
        chosen_variant, found["fusion"] = (None if variant is None else candidates[0]), None  # the named file tells
    elif hits:
        chosen_variant, found["fusion"] = hits[0]
        if len(hits) > 1:
            logger.info("using %s (%s); other Ovi models found: %s", hits[0][1], chosen_variant.name,
                        ", ".join(p.name for _, p in hits[1:]))
    else:
        chosen_variant = candidates[0]
        names = [FP8_FILENAME] if fp8 else [v.filename for v in candidates] + ["a file with 'ovi' in its name"]
        msg = missing_message("fusion", names, [models / s for s in COMFY_FUSION_FOLDERS])
        if rejected:
            msg += f" (not usable: {', '.join(rejected[:3])})"
        problems.append(msg)

    for part, (subs, file_names) in COMFY_LAYOUT.items():
        if part in skip or (part == "vocoder" and _carries_vocoder(found.get("audio_vae"))):
            found[part] = None
            continue
        folders = [models / s for s in subs]
        present = {}
        for p in (p for f in folders for p in _files_under(f)):
            present.setdefault(p.name, p)  # the first folder wins for a name
        hit = next((present[n] for n in file_names if n in present), None)  # names in order of preference
        if hit is None:
            problems.append(missing_message(part, list(file_names), folders))
        found[part] = hit
    raise_if_missing(problems)
    return OviWeightPaths(variant=chosen_variant, **found)


# ---- checking the contents -------------------------------------------------------------------------------------
_NON_WEIGHT_KEYS = ("spiece_model", "scaled_fp8", ".comfy_quant", "num_batches_tracked")


def _meta_state_dict(path: Path) -> dict:
    """Every tensor of a file as an empty meta tensor of the right shape and dtype, from its header (read once)."""
    return filekinds.meta_state_dict(filekinds.read_header(path))


def _expect_kind(part: str, path: Path) -> None:
    """WrongFileError naming what the file is and which loader takes it, when it does not serve ``part``
    (filekinds.expect). A file whose header cannot be read is left to the part's own check (its loader names the
    problem best)."""
    try:
        found = filekinds.identify(path)
    except WrongFileError:
        return
    filekinds.expect(found.header, part, path.name, f"Get it from {WHERE_TO_GET[part]}")


def _check_dtypes(path: Path, sd: dict) -> str:
    """'' or a WrongFileError for weight tensors that are not floating point; returns a summary of the dtypes."""
    counts: dict[str, int] = {}
    bad = []
    for k, t in sd.items():
        name = str(t.dtype).removeprefix("torch.")
        counts[name] = counts.get(name, 0) + 1
        if not t.dtype.is_floating_point and not k.endswith(_NON_WEIGHT_KEYS):
            bad.append(f"{k} ({name})")
    if bad:
        raise WrongFileError(f"{path.name} has {len(bad)} weight tensors that are not floating point (e.g. "
                             f"{', '.join(bad[:2])}): wrong dtype — Ovi reads float32/bfloat16/float16/float8 weights "
                             "(a GGUF or int8-quantised conversion cannot be used); use the original file")
    return ", ".join(f"{n} {d}" for d, n in sorted(counts.items(), key=lambda dn: -dn[1]))


def _check_fusion(path: Path) -> str:
    import torch

    from ovi_core.fusion import OviFusion
    from ovi_core.weights import (
        _check_keys,
        check_is_fusion_checkpoint,
        config_from_checkpoint,
        detect_variant,
        inspect_checkpoint,
    )

    info = inspect_checkpoint(path)
    check_is_fusion_checkpoint(info)
    cfg = config_from_checkpoint(info)
    with torch.device("meta"):
        model = OviFusion(cfg)
    _check_keys(model, info)  # missing / unexpected keys and shape mismatches
    files = list(dict.fromkeys([path, *info.files.values()]))  # a split model: both halves
    dtypes = _check_dtypes(path, {f"{p.name}:{k}": t for p in files for k, t in _meta_state_dict(p).items()})
    variant, source = detect_variant(info)
    what = "Ovi fused model" if len(files) == 1 else f"Ovi model in two files ({info.kind.kind.label} + {files[1].name})"
    return (f"{what}, {variant} (from the {source}), {cfg.num_layers} blocks of width {cfg.video.dim}; "
            f"tensors: {dtypes}")


def _check_text_encoder(path: Path, tokenizer: Path | None) -> str:
    from ovi_core.text_encoder import _empty_umt5, _resolve_tokenizer, umt5_config
    from ovi_core.umt5_keys import _config_from_shapes, _encoder_names, _open_weights

    with _open_weights(path) as f:  # the loader's own check asks the file-kind table (one read of a .pth)
        layout, names = _encoder_names(f)
        hp = _config_from_shapes(f, names, layout)
    model = _empty_umt5(umt5_config(**{("vocab_size" if k == "vocab" else k): v for k, v in hp.items()}))
    wanted = {n for n, _ in model.named_parameters() if n != "encoder.embed_tokens.weight"}
    missing = sorted(wanted - set(names.values()))
    if missing:
        raise WrongFileError(f"{path.name} lacks {len(missing)} umT5 encoder tensors (e.g. {missing[0]}): missing "
                             f"keys — the file is incomplete or of another model. Get it from {WHERE_TO_GET['text_encoder']}")
    dtypes = _check_dtypes(path, _meta_state_dict(path))
    tok = _resolve_tokenizer(path, tokenizer)
    return (f"umT5 text encoder ({layout} layout), {hp['num_layers']} layers of width {hp['d_model']}, vocabulary "
            f"{hp['vocab']:,}; tokenizer: {getattr(tok, 'description', type(tok).__name__)}; tensors: {dtypes}")


def _check_video_vae(path: Path) -> str:
    from ovi_core.wan_vae import video_vae_from_state_dict

    _expect_kind("video_vae", path)
    sd = _meta_state_dict(path)
    video_vae_from_state_dict(sd, device="meta", source=path.name)  # latent channels, keys and shapes
    dtypes = _check_dtypes(path, sd)
    half = "encoder + decoder" if "encoder.conv1.weight" in sd else "decoder only"
    return f"{filekinds.NEEDED['video_vae']}, {half}; tensors: {dtypes}"


def _check_audio_vae(path: Path, full: bool = True) -> str:
    from ovi_core.checkpoint_io import read_checkpoint
    from ovi_core.mmaudio_vae import load_audio_decoder, mel_vae_from_state_dict

    sd = read_checkpoint(path, "MMAudio audio VAE") if full else _meta_state_dict(path)
    dtypes = _check_dtypes(path, sd)
    # without `full` the kind (its key signature) is the check: the pipeline loads the small decoders before sampling
    _expect_kind("audio_vae", path)
    comfy = filekinds.identify(path).kind.name == "mmaudio_vae_vocoder"
    if full and comfy:
        load_audio_decoder(path, None, device="cpu")  # small: read in full, every key and shape checked
    elif full:
        mel_vae_from_state_dict(sd, source=path.name)
    if comfy:
        return f"MMAudio 16 kHz VAE + BigVGAN vocoder in one file (ComfyUI layout); tensors: {dtypes}"
    return f"MMAudio 16 kHz audio VAE; tensors: {dtypes}"


def _check_vocoder(path: Path) -> str:
    from ovi_core.bigvgan import vocoder_from_state_dict

    sd = _meta_state_dict(path)
    dtypes = _check_dtypes(path, sd)
    _expect_kind("vocoder", path)
    vocoder_from_state_dict(sd, source=path.name)  # on the meta device: kind, keys and shapes, no data read
    return f"BigVGAN vocoder (16 kHz, MMAudio); tensors: {dtypes}"


def _check_fusion_values(path: Path) -> str:
    """The fused file's header and keys, then every value read once (NaN/Inf would be a corrupt download)."""
    from ovi_core.weights import check_finite_checkpoint

    about = _check_fusion(path)
    n = check_finite_checkpoint(path)
    return f"{about}; all {n} tensors finite"


def check_weight_files(paths: OviWeightPaths, full: bool = True,
                       scan_values: bool = False) -> list[tuple[str, Path, str | None, str]]:
    """Read every file of ``paths`` and say what it is: (part, path, problem or None, description).

    Headers and keys only where that suffices (the fused model, the text encoder, the video VAE, the vocoder:
    missing keys, shapes, dtypes, truncation); with ``full`` the small audio VAE is loaded in full (without, its
    key signature is checked). Torch files are opened with
    weights_only=True, so no pickled code ever runs. With ``scan_values`` every tensor of the fused model is also
    read and checked for NaN/Inf (the whole file is read: about as long as copying it). Problems are
    WrongFileError/OviInputError messages."""
    from ovi_core.errors import OviError

    fusion_check = _check_fusion_values if scan_values else _check_fusion
    checks = [("fusion", paths.fusion, lambda: fusion_check(paths.fusion)),
              ("text_encoder", paths.text_encoder, lambda: _check_text_encoder(paths.text_encoder, paths.tokenizer)),
              ("video_vae", paths.video_vae, lambda: _check_video_vae(paths.video_vae)),
              ("audio_vae", paths.audio_vae, lambda: _check_audio_vae(paths.audio_vae, full))]
    if paths.vocoder is not None:
        checks.append(("vocoder", paths.vocoder, lambda: _check_vocoder(paths.vocoder)))
    results = []
    for part, path, check in checks:
        try:
            about, problem = check(), None
        except OviError as exc:
            about, problem = "", " ".join(str(exc).split())
        except (OSError, ValueError, RuntimeError, KeyError) as exc:  # unexpected content: name it, no traceback
            about, problem = "", f"{path.name} could not be checked ({type(exc).__name__}: {str(exc)[:200]})"
        results.append((part, path, problem, about))
    return results
