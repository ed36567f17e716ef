"""Everything the nodes ask of ComfyUI, in one place, each with a plain fallback when ComfyUI is absent.

ComfyUI present: model folders through ``folder_paths``, devices and memory through ``comfy.model_management``
(models wrapped in a ``ModelPatcher`` so ComfyUI can load, offload and free them like its own), progress through
``comfy.utils.ProgressBar``, previews through ``latent_preview``, interrupts through
``throw_exception_if_processing_interrupted``, the VIDEO type through ``comfy_api``.
ComfyUI absent (tests, scripts): files come from folders set with ``set_fallback_folders``, everything runs on the
CPU, progress and interrupts are no-ops, and the output folder is ``set_fallback_output_dir``'s.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ovi_core import interrupt
from ovi_core.errors import OviInputError, WrongFileError
from ovi_core.knobs import COMPUTE_DTYPES, Knob

log = logging.getLogger(__name__)

try:  # the ComfyUI services the plain nodes use go through here; only the native-path modules (native_model.py,
     # native_nodes.py, av_nodes.py), which build on ComfyUI's own classes, import comfy themselves
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils
    import folder_paths

    HAVE_COMFY = True
except ImportError:
    mm = folder_paths = None
    HAVE_COMFY = False

try:  # the V3 node schema: ComfyUI's, or the pack's stand-in with the same names (nodes/schema.py)
    from comfy_api.latest import ComfyExtension, io  # noqa: F401 - the pack's nodes use bridge.io / ComfyExtension

    HAVE_COMFY_API = True
except ImportError:
    from . import schema as io  # noqa: F401
    from .schema import ComfyExtension  # noqa: F401

    HAVE_COMFY_API = False

DEMO_ENTRY = "(demo) tiny built-in model"

# Folder kinds. "ovi" (models/ovi) is ours; "mmaudio" (models/mmaudio) is where the MMAudio node packs keep the
# same audio VAE and vocoder files; the others are ComfyUI's own.
OWN_FOLDERS = ("ovi", "mmaudio")
_EXTENSIONS = {".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin"}
_fallback_folders: dict[str, list[Path]] = {}
_fallback_output: list[Path] = []


def register_model_folders() -> None:
    """models/ovi and models/mmaudio as ComfyUI model folders (extra_model_paths.yaml can add more paths)."""
    if not HAVE_COMFY:
        return
    for kind in OWN_FOLDERS:
        default = os.path.join(folder_paths.models_dir, kind)
        if kind in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(kind, default)
        else:
            folder_paths.folder_names_and_paths[kind] = ([default], set(folder_paths.supported_pt_extensions))


def set_fallback_folders(kind: str, folders: list[str | os.PathLike]) -> None:
    """Without ComfyUI: where files of a kind ("ovi", "vae", ...) are looked up (tests, scripts)."""
    _fallback_folders[kind] = [Path(f) for f in folders]


def set_fallback_output_dir(folder: str | os.PathLike | None) -> None:
    _fallback_output[:] = [Path(folder)] if folder is not None else []


# ---- files ---------------------------------------------------------------------------------------------------
def list_files(kinds: tuple[str, ...]) -> list[str]:
    """Model file names of the given folder kinds, sorted, each name once."""
    names: list[str] = []
    for kind in kinds:
        if HAVE_COMFY:
            try:
                found = folder_paths.get_filename_list(kind)
            except KeyError:  # an unknown kind in an old ComfyUI
                found = []
        else:
            found = [p.relative_to(folder).as_posix() for folder in _fallback_folders.get(kind, [])
                     if folder.is_dir() for p in sorted(folder.rglob("*")) if p.suffix in _EXTENSIONS]
        names += [n for n in found if n not in names]
    return sorted(names)


def model_choices(kinds: tuple[str, ...]) -> list[str]:
    """COMBO options of a loader: the files, then the built-in demo entry (always present)."""
    return list_files(kinds) + [DEMO_ENTRY]


def resolve_file(kinds: tuple[str, ...], name: str, what: str) -> Path:
    """Full path of a file picked in a loader; a clear error when it is gone."""
    for kind in kinds:
        if HAVE_COMFY:
            try:
                path = folder_paths.get_full_path(kind, name)
            except KeyError:
                path = None
            if path:
                return Path(path)
        else:
            for folder in _fallback_folders.get(kind, []):
                if (folder / name).is_file():
                    return folder / name
    places = ", ".join(f"models/{k}" for k in kinds)
    raise WrongFileError(f"{what} file `{name}` was not found in {places}. Put the file there (or pick another one "
                         f"in the list; press R in ComfyUI to refresh the lists)")


# ---- devices -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Devices:
    load: torch.device  # where the model computes
    offload: torch.device  # where it waits between uses


def devices_for(role: str) -> Devices:
    """Load/offload devices ComfyUI assigns to a role: "diffusion", "text_encoder" or "vae"."""
    if not HAVE_COMFY:
        cpu = torch.device("cpu")
        return Devices(cpu, cpu)
    if role == "diffusion":
        return Devices(mm.get_torch_device(), mm.unet_offload_device())
    if role == "text_encoder":
        return Devices(mm.text_encoder_device(), mm.text_encoder_offload_device())
    return Devices(mm.vae_device(), mm.vae_offload_device())


def intermediate_device() -> torch.device:
    """Where node outputs (latents, images, audio) live between nodes."""
    return mm.intermediate_device() if HAVE_COMFY else torch.device("cpu")


def compute_dtype(device: torch.device, choice: str = "auto") -> torch.dtype:
    """Matmul dtype: an explicit choice, or bf16 where ComfyUI says the device runs it well, else fp16 on a GPU,
    else float32 (the CPU)."""
    if choice in COMPUTE_DTYPES:
        return COMPUTE_DTYPES[choice]
    if device.type == "cpu":
        return torch.float32
    if HAVE_COMFY:
        if mm.should_use_bf16(device):
            return torch.bfloat16
        if mm.should_use_fp16(device):
            return torch.float16
        return torch.float32
    return torch.bfloat16


def knob_input(knob: Knob, name: str | None = None, extra: str = "", **kw):
    """A node input made from an ovi_core knob: its default, widget range and step, the options the nodes offer and
    its tooltip (``extra`` appended: what this node adds). ``name``: the input's own name where it differs from the
    knob's (saved workflows know it by that name); ``kw`` is passed on (optional=True, control_after_generate=True)."""
    name = name or knob.name
    spec = {"default": knob.default, "tooltip": knob.tooltip(extra)} | kw
    if knob.choices:
        return io.Combo.Input(name, options=knob.options, **spec)
    if knob.kind is str:
        return io.String.Input(name, **spec)
    number = int if knob.kind is int else float
    for key, value in (("min", knob.widget_min), ("max", knob.widget_max), ("step", knob.step)):
        if value is not None:
            spec.setdefault(key, number(value) if key != "step" else value)
    return (io.Int if knob.kind is int else io.Float).Input(name, **spec)


# ---- the MODEL and the joint LATENT ------------------------------------------------------------------------------
def native_model():
    """nodes/native_model.py (Ovi as a ComfyUI BaseModel); only with ComfyUI (it builds on comfy.model_base)."""
    from . import native_model as module

    return module


def layer_operations(weight_dtype: torch.dtype, compute_dtype: torch.dtype, load_device: torch.device):
    """ComfyUI's layer classes for weights kept in ``weight_dtype`` and run in ``compute_dtype`` (casting, fp8
    storage, lowvram partial loading), or None (ovi_core's own layers) without ComfyUI."""
    if not HAVE_COMFY:
        return None
    import comfy.ops

    return comfy.ops.pick_operations(weight_dtype, compute_dtype, load_device=load_device)


def load_model(model) -> None:
    """Before sampling with a MODEL's module directly: ComfyUI loads it (as much as fits, patches such as LoRAs
    applied), freeing other models as needed. A no-op for the plain stand-in without ComfyUI."""
    if HAVE_COMFY and isinstance(model, comfy.model_patcher.ModelPatcher):
        mm.load_models_gpu([model])


class PlainNested:
    """Stand-in for comfy.nested_tensor.NestedTensor without ComfyUI: the joint latent's parts."""

    def __init__(self, tensors):
        self.tensors = list(tensors)
        self.is_nested = True

    def unbind(self):
        return self.tensors


def nested(tensors):
    """A NestedTensor (ComfyUI's joint audio+video LATENT samples / noise_mask) of ``tensors``."""
    if HAVE_COMFY:
        import comfy.nested_tensor

        return comfy.nested_tensor.NestedTensor(tensors)
    return PlainNested(tensors)


# ---- memory management ---------------------------------------------------------------------------------------
class ModuleHolder(nn.Module):
    """What ComfyUI's ModelPatcher manages: our module as a child, with the plain ``device`` attribute the patcher
    writes (OviFusion and transformers models expose ``device`` as a read-only property)."""

    def __init__(self, module: nn.Module, device: torch.device):
        super().__init__()
        self.inner = module
        self.device = device


_HOLDER_CLASSES: dict[str, type] = {}


def _holder_class(name: str) -> type:
    """A ModuleHolder subclass named after the held module, so ComfyUI's log says "Requested to load
    OviFusionHolder" rather than a generic name."""
    if name not in _HOLDER_CLASSES:
        _HOLDER_CLASSES[name] = type(f"{name}Holder", (ModuleHolder,), {})
    return _HOLDER_CLASSES[name]


class ManagedModule:
    """A torch module ComfyUI's memory manager knows about (a ModelPatcher), or a plain one without ComfyUI.

    ``use()`` puts it on its compute device (ComfyUI frees other models first as needed) and returns it;
    ``release()`` moves it back to the offload device now instead of when ComfyUI needs the memory."""

    def __init__(self, module: nn.Module, devices: Devices):
        self.module = module
        self.devices = devices
        self.patcher = None
        if HAVE_COMFY:  # also on the CPU, so ComfyUI's accounting and "unload models" include ours
            holder = _holder_class(type(module).__name__)(module, devices.offload)
            self.patcher = comfy.model_patcher.ModelPatcher(holder, load_device=devices.load,
                                                            offload_device=devices.offload)

    def use(self) -> nn.Module:
        if self.patcher is not None:
            mm.load_models_gpu([self.patcher], force_full_load=True)  # our modules cannot run partly loaded
        return self.module

    def release(self) -> None:
        if self.patcher is None:
            return
        for loaded in list(mm.current_loaded_models):
            if loaded.model is self.patcher:
                loaded.model_unload()
                mm.current_loaded_models.remove(loaded)
                break
        mm.soft_empty_cache()

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


def soft_empty_cache() -> None:
    if HAVE_COMFY:
        mm.soft_empty_cache()


# ---- progress, previews, interrupts ----------------------------------------------------------------------------
def check_interrupt() -> bool:
    """Raises ComfyUI's own InterruptProcessingException when the user pressed Cancel (ComfyUI then reports an
    interruption, not an error). Returns False otherwise, as ovi_core's ``should_interrupt`` callbacks expect."""
    if HAVE_COMFY:
        mm.throw_exception_if_processing_interrupted()
    return False


_checker_installed = False


def _comfy_interrupt_checker() -> bool:
    """ovi_core.interrupt checker: ComfyUI's cancel flag, looked up at every check (per transformer block, VAE
    chunk or tile, text-encoder layer, vocoder stage, muxed frame), so /interrupt stops inside long operations."""
    mm.throw_exception_if_processing_interrupted()
    return False


def install_interrupt_checker() -> bool:
    """Make ComfyUI's cancel stop ovi_core's long loops (process-wide, as ComfyUI's flag is). Idempotent; a no-op
    without ComfyUI. Returns whether the checker is installed."""
    if not HAVE_COMFY:
        return False
    global _checker_installed
    if not _checker_installed:
        interrupt.add_checker(_comfy_interrupt_checker)
        _checker_installed = True
    return True


class Progress:
    """One tick per step on the node's progress bar, with a latent preview when ComfyUI's previews are on."""

    def __init__(self, total: int, preview_format=None):
        self.total = total
        self.bar = comfy.utils.ProgressBar(total) if HAVE_COMFY else None
        self.previewer = None
        if HAVE_COMFY and preview_format is not None:
            try:
                import latent_preview

                self.previewer = latent_preview.get_previewer(mm.get_torch_device(), preview_format)
            except Exception as exc:  # previews are a nicety: never fail a generation over them
                log.debug("no latent previews: %s", exc)

    def step(self, done: int, latent: torch.Tensor | None = None) -> None:
        if self.bar is None:
            return
        preview = None
        if self.previewer is not None and latent is not None:
            try:
                preview = self.previewer.decode_latent_to_preview_image("JPEG", latent)
            except Exception as exc:
                log.debug("latent preview failed: %s", exc)
                self.previewer = None
        self.bar.update_absolute(done, self.total, preview)


def wan22_latent_format():
    """ComfyUI's Wan2.2 latent format (for previews), or None."""
    if not HAVE_COMFY:
        return None
    import comfy.latent_formats

    return comfy.latent_formats.Wan22()


# ---- output files and the VIDEO type -----------------------------------------------------------------------------
def output_path(prefix: str, width: int, height: int, extension: str) -> tuple[Path, str, str]:
    """(full path, file name, subfolder) for a new output file, numbered as ComfyUI's savers number theirs."""
    if HAVE_COMFY:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            prefix, folder_paths.get_output_directory(), width, height)
    else:
        if not _fallback_output:
            raise OviInputError("no output folder: call nodes.bridge.set_fallback_output_dir() outside ComfyUI")
        root = _fallback_output[0]
        subfolder, name = os.path.split(os.path.normpath(prefix))
        folder = root / subfolder
        if os.path.commonpath([root.resolve(), folder.resolve()]) != str(root.resolve()):
            raise OviInputError(f"filename_prefix {prefix!r} points outside the output folder")
        folder.mkdir(parents=True, exist_ok=True)
        taken = [p.name for p in folder.glob(f"{name}_*_.{extension}")]
        counter = 1 + max((int(n[len(name) + 1:].split("_")[0]) for n in taken
                           if n[len(name) + 1:].split("_")[0].isdigit()), default=0)
    file = f"{name}_{counter:05}_.{extension}"
    return Path(folder) / file, file, subfolder


class PlainVideo:
    """Stand-in for ComfyUI's VIDEO when comfy_api is absent: the written file and its components."""

    def __init__(self, path: Path, images: torch.Tensor, audio: dict | None, fps: float):
        self.path, self.images, self.audio, self.frame_rate = path, images, audio, fps

    def get_components(self):
        return self

    def get_dimensions(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[1])


def make_video(path: Path, images: torch.Tensor, audio: dict | None, fps: float):
    """ComfyUI's VIDEO (VideoFromComponents: frames, audio, frame rate) when comfy_api provides it."""
    try:
        from fractions import Fraction

        from comfy_api.latest import InputImpl, Types
    except ImportError:
        return PlainVideo(path, images, audio, fps)
    rate = Fraction(fps).limit_denominator(1001)
    return InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=audio, frame_rate=rate))
