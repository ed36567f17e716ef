"""Every user-facing knob, once: its default, range, choices and one-line help, read by the sampler, the command line
and the nodes; and ``check``, the one validation of a knob's value wherever it enters.

A knob is data (``Knob``): ``default`` is ours, ``reference`` Ovi's own value where the reference has the knob (None
where it does not: the knob is ours); ``min``/``max`` bound what the core accepts, ``ui_min``/``ui_max``/``step`` only
shape a node's widget (a slider's end, not a limit of the math); ``ui_hidden`` lists choices the core takes that the
nodes do not offer.

The choice tables live where their meaning lives and are only collected here:
  solvers     ovi_core/schedulers.py ``SCHEDULERS`` (add a scheduler class and its entry: the CLI, the nodes and the
              checks offer it),
  attention   ovi_core/attention.py ``BACKENDS`` (kernel, package, GPU generation),
  variants    ovi_core/config.py ``VARIANTS``;
the dtype tables are plain names -> torch dtypes and live here (``COMPUTE_DTYPES``, ``WEIGHT_DTYPES``).

Adding one touches one file: a solver = a FlowScheduler subclass and its entry in schedulers.SCHEDULERS; a dtype = an
entry in COMPUTE_DTYPES (then also a weight dtype) or WEIGHT_DTYPES (an 8-bit float is stored like fp8_e4m3fn: matmul
weights only); an attention backend = a row of attention.BACKENDS. The CLI's choices, the nodes' options and the
checks follow (tests/test_knobs.py holds the nodes and the CLI to this table).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from ovi_core.attention import BACKENDS
from ovi_core.config import DEFAULT_VARIANT, VARIANTS
from ovi_core.errors import OviInputError
from ovi_core.schedulers import SCHEDULERS

# ---- choice tables -------------------------------------------------------------------------------------------------
SOLVERS: tuple[str, ...] = tuple(SCHEDULERS)
ATTENTION_BACKENDS: tuple[str, ...] = tuple(BACKENDS)
VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)
SYNC_CUTS = ("both", "audio_to_video", "video_to_audio")  # which fusion direction the sync pass cuts
COMPUTE_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# How weights are kept in memory: "auto" = fp8 files stay fp8, others take the compute dtype; "fp8_e4m3fn" stores the
# blocks' matmul weights in fp8 (each layer is upcast when it runs).
WEIGHT_DTYPES: dict[str, torch.dtype | None] = {"auto": None, **COMPUTE_DTYPES, "fp8_e4m3fn": torch.float8_e4m3fn}
MAX_SEED = 2**64 - 1


def is_fp8(dtype: torch.dtype | None) -> bool:
    """An 8-bit float storage dtype: only the blocks' matmul weights are kept in it (norms and biases are not)."""
    return dtype is not None and dtype.is_floating_point and dtype.itemsize == 1


SAME = object()  # Knob.reference: the reference's value is our default


@dataclass(frozen=True)
class Knob:
    name: str
    default: object
    help: str  # one line: node tooltip, --help text and the hint of an error message
    kind: type = float  # int, float or str (str knobs have choices)
    min: float | None = None
    max: float | None = None
    above_min: bool = False  # min itself is refused (> min, not >= min)
    choices: tuple[str, ...] = ()
    step: float | None = None  # node widget step
    ui_min: float | None = None  # node widget bounds where they are narrower than min / max
    ui_max: float | None = None
    ui_hidden: tuple[str, ...] = ()  # choices the core takes but the nodes do not offer
    max_text: str | None = None  # how to write max in messages (2**64 - 1)
    reference: object = SAME  # Ovi's value; None: the reference has no such knob

    @property
    def reference_value(self):
        return self.default if self.reference is SAME else self.reference

    @property
    def widget_min(self):
        return self.min if self.ui_min is None else self.ui_min

    @property
    def widget_max(self):
        return self.max if self.ui_max is None else self.ui_max

    @property
    def options(self) -> list[str]:
        """The choices a node offers."""
        return [c for c in self.choices if c not in self.ui_hidden]

    def tooltip(self, extra: str = "") -> str:
        """Node tooltip: the help line, Ovi's value, then ``extra`` (what this node adds)."""
        ref = self.reference_value
        said = "" if ref is None else f" (Ovi: {ref})"
        return f"{self.help[:1].upper()}{self.help[1:]}{said}.{' ' + extra if extra else ''}"

    def range_text(self, top: int | None = None) -> str:
        """'between 1 and 1000', '> 0', '>= 0' (top overrides max)."""
        hi = self.max if top is None else top
        if self.min is not None and hi is not None:
            return f"between {self.min} and {self.max_text if top is None and self.max_text else hi}"
        if self.min is not None:
            return f"{'>' if self.above_min else '>='} {self.min}"
        return ""

    def hint(self) -> str:
        ref = self.reference_value
        return self.help + ("" if ref is None else f"; Ovi's default is {ref}")


# ---- the knobs -----------------------------------------------------------------------------------------------------
SEED = Knob("seed", 103, "noise seed; video and audio noise both come from it", int, 0, MAX_SEED,
            max_text="2**64 - 1")
STEPS = Knob("steps", 50, "sampling steps", int, 1, 1000)
SOLVER = Knob("solver", "unipc", "flow-matching solver", str, choices=SOLVERS)
SHIFT = Knob("shift", 5.0, "timestep shift of the flow schedule", float, 0, None, above_min=True, step=0.1,
             ui_min=0.01, ui_max=100.0)
VIDEO_GUIDANCE = Knob("video_guidance", 4.0, "classifier-free guidance of the video, 1 = off", float, 0, None,
                      step=0.1, ui_max=30.0)
AUDIO_GUIDANCE = Knob("audio_guidance", 3.0, "classifier-free guidance of the audio, 1 = off", float, 0, None,
                      step=0.1, ui_max=30.0)
SLG_LAYER = Knob("slg_layer", 11, "skip-layer guidance: the fused block skipped in the negative pass, 0 or -1 = off; "
                 "below the model's depth", int, -1, None, ui_max=63)
SYNC_GUIDANCE = Knob("sync_guidance", 0.0, "lip-sync knob (sync guidance): one more model pass per step with the "
                     "video<->audio attention cut, the result pushed away from it by this scale, "
                     "v + s·(v_pos − v_cut); 0 = off (no extra pass), try 0.5-2", float, 0, None, step=0.1,
                     ui_max=10.0, reference=None)
SYNC_CUT = Knob("sync_cut", "both", "which fusion direction the sync pass cuts, and so which modality is pushed: both, "
                "audio_to_video (the video stops seeing the audio: pushes the video, e.g. lips to the speech), "
                "video_to_audio (the audio stops seeing the video: pushes the audio)", str, choices=SYNC_CUTS,
                reference=None)
CACHE_THRESHOLD = Knob("cache_threshold", 0.0, "step cache: reuse the previous step's velocities while both modalities "
                       "change less than this (relative, accumulated); 0 = off, 0.05-0.2 skips steps whose velocities "
                       "barely change", float, 0, None, reference=None)
VIDEO_NEGATIVE = Knob("video_negative", "jitter, bad hands, blur, distortion", "what the video should avoid", str)
AUDIO_NEGATIVE = Knob("audio_negative", "robotic, muffled, echo, distorted", "what the audio should avoid", str)
SAMPLING: dict[str, Knob] = {k.name: k for k in (SEED, STEPS, SOLVER, SHIFT, VIDEO_GUIDANCE, AUDIO_GUIDANCE, SLG_LAYER,
                                                SYNC_GUIDANCE, SYNC_CUT, CACHE_THRESHOLD)}

# the model and the runtime
VARIANT = Knob("variant", DEFAULT_VARIANT, "which Ovi model: clip length, trained area and caption form", str,
               choices=VARIANT_NAMES)
DTYPE = Knob("dtype", "bf16", "compute dtype of the fusion model and text encoder", str, choices=tuple(COMPUTE_DTYPES))
VAE_DTYPE = Knob("vae_dtype", "fp32", "the decoders' compute dtype", str, choices=tuple(COMPUTE_DTYPES),
                 reference=None)
WEIGHT_DTYPE = Knob("weight_dtype", "auto", "how the fusion weights are kept in memory: auto = fp8 files stay fp8, "
                    "others use the compute dtype; fp8_e4m3fn halves memory (each layer is upcast when it runs) at "
                    "some quality cost", str, choices=tuple(WEIGHT_DTYPES),
                    ui_hidden=("fp32",),  # in ComfyUI the MODEL is kept in the compute dtype or below
                    reference=None)
ATTENTION = Knob("attention", "sdpa", "attention kernel: sdpa = PyTorch (always available); the others when installed "
                 "(falling back to sdpa with a warning otherwise)", str, choices=ATTENTION_BACKENDS, reference=None)
# node precisions ("auto": what the device runs well); umT5 is not run in fp16 (its activations overflow there)
TEXT_ENCODER_PRECISION = Knob("precision", "auto", "compute dtype; auto: bf16 on a GPU (as Ovi), fp32 on the CPU", str,
                              choices=("auto", *COMPUTE_DTYPES), ui_hidden=("fp16",), reference=None)
VIDEO_VAE_PRECISION = Knob("precision", "auto", "compute dtype; auto: bf16 on a GPU that runs it well, fp32 on the CPU",
                           str, choices=("auto", "fp32", *(d for d in COMPUTE_DTYPES if d != "fp32")), reference=None)

# the clip (node widgets; the sizes themselves are checked by ovi_core.sizes)
WIDTH = Knob("width", 704, "clip width in pixels, a multiple of 32", int, 32, 4096, step=32, reference=None)
HEIGHT = Knob("height", 704, "clip height in pixels, a multiple of 32", int, 32, 4096, step=32, reference=None)
LENGTH = Knob("length", 5, "clip length in seconds (5 or 10) or the same as a frame count (121 / 241)", int, 1, 1000,
              reference=None)


# ---- the one check -------------------------------------------------------------------------------------------------
def check(knob: Knob | str, value, label: str | None = None, num_layers: int | None = None):
    """``value`` if it is a valid value of ``knob``, else OviInputError naming it (``label``: the input's own name,
    e.g. a node's video_cfg), what is expected and the knob's meaning. ``num_layers`` (the model's depth) bounds
    slg_layer. NaN and infinities are refused (they pass ComfyUI's min/max checks)."""
    knob = SAMPLING[knob] if isinstance(knob, str) else knob
    name = label or knob.name
    if knob.choices:
        if value not in knob.choices:
            raise OviInputError(f"unknown {name} {value!r}; choose one of {', '.join(knob.choices)} ({knob.hint()})")
        return value
    if knob.kind is str:
        if not isinstance(value, str):
            raise OviInputError(f"{name} must be text, got {type(value).__name__} ({knob.hint()})")
        return value
    top = None if num_layers is None else num_layers - 1
    if knob.kind is int:
        hi = knob.max if top is None else top
        whole = not isinstance(value, bool) and isinstance(value, numbers.Integral)
        if whole and top is not None and value > top:
            raise OviInputError(f"{name} {value} is past the model's {num_layers} fused blocks; use a whole number "
                                f"{knob.range_text(top)} ({knob.hint()})")
        if not whole or (knob.min is not None and value < knob.min) or (hi is not None and value > hi):
            raise OviInputError(f"{name} must be a whole number {knob.range_text(top)}, got {value!r} ({knob.hint()})")
        return value
    number = not isinstance(value, bool) and isinstance(value, numbers.Real)
    finite = number and math.isfinite(value)
    low = knob.min is not None and finite and (value <= knob.min if knob.above_min else value < knob.min)
    high = knob.max is not None and finite and value > knob.max
    if not finite or low or high:
        raise OviInputError(f"{name} must be a {'' if finite or not number else 'finite '}number "
                            f"{knob.range_text()}, got {value!r} ({knob.hint()})")
    return value


def check_sampling(num_layers: int | None = None, **values) -> None:
    """Check every given sampling knob (``seed=``, ``steps=``, ...: names of ``SAMPLING``); the first bad one raises
    OviInputError. The model depth ``num_layers`` bounds slg_layer if given."""
    for name, value in values.items():
        if name not in SAMPLING:
            raise TypeError(f"unknown sampling knob {name!r}; known: {', '.join(SAMPLING)}")
        check(SAMPLING[name], value, num_layers=num_layers if name == "slg_layer" else None)
