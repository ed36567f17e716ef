"""A minimal stand-in for ComfyUI's V3 node schema (``comfy_api.latest.io``) for when ComfyUI is absent.

The pack's nodes are V3 ``io.ComfyNode`` classes; ``bridge.io`` is ComfyUI's module when it is importable and this
one otherwise (tests, scripts). Only what the pack uses is here, with the same names, arguments and V1 views
(``INPUT_TYPES()``, ``RETURN_TYPES``, ``RETURN_NAMES``, ``OUTPUT_TOOLTIPS``, ``FUNCTION``, ``DESCRIPTION``,
``CATEGORY``, ``OUTPUT_NODE``) computed as ComfyUI 0.8 computes them (comfy_api/latest/_io.py), so a test sees the
definitions ComfyUI's /object_info shows. ``execute`` and ``validate_inputs`` are plain classmethods: call them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


def _pruned(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class Input:
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 **options):
        self.id, self.display_name, self.optional, self.tooltip = id, display_name, optional, tooltip
        self.options = options  # default, min, max, step, multiline, options (Combo), control_after_generate, ...

    def as_dict(self) -> dict:
        extra = dict(self.options)
        if "force_input" in extra:
            extra["forceInput"] = extra.pop("force_input")
        return _pruned({"display_name": self.display_name, "tooltip": self.tooltip, **extra})


class Output:
    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name or id, tooltip, is_output_list


def Custom(io_type: str) -> type:
    """A socket type: ``Custom("OVI_TEXT").Input(...)`` / ``.Output(...)``, as ComfyUI's io.Custom."""
    parent = type(io_type, (), {"io_type": io_type})
    parent.Input = type("Input", (Input,), {"io_type": io_type})
    parent.Output = type("Output", (Output,), {"io_type": io_type})
    return parent


Boolean, Int, Float, String, Combo = (Custom(t) for t in ("BOOLEAN", "INT", "FLOAT", "STRING", "COMBO"))
Image, Mask, Latent, Audio, Video = (Custom(t) for t in ("IMAGE", "MASK", "LATENT", "AUDIO", "VIDEO"))
Conditioning, Model = Custom("CONDITIONING"), Custom("MODEL")


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    is_output_node: bool = False
    is_deprecated: bool = False

    def finalize(self):
        pass


class NodeOutput:
    def __init__(self, *args: Any, ui: dict | None = None):
        self.args, self.ui = args, ui

    @property
    def result(self):
        return self.args if self.args else None

    def __getitem__(self, index):
        return self.args[index]


class classproperty:  # noqa: N801 - as comfy_api.internal's
    def __init__(self, getter):
        self.getter = getter

    def __get__(self, obj, owner):
        return self.getter(owner)


class ComfyNode:
    """V3 node base: subclasses define ``define_schema`` and ``execute`` (and optionally ``validate_inputs``)."""

    hidden = None  # ComfyUI sets a HiddenHolder on the class clone it runs; None here

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        raise NotImplementedError

    # ---- the V1 view ComfyUI derives from the schema ----
    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802
        schema, out = cls.define_schema(), {}
        for i in schema.inputs:
            spec = i.as_dict()
            out.setdefault("optional" if i.optional else "required", {})[i.id] = (i.io_type, spec)
        for h in schema.hidden:
            out.setdefault("hidden", {})[h.name] = (h.value,)
        return out

    FUNCTION = "EXECUTE_NORMALIZED"

    @classmethod
    def EXECUTE_NORMALIZED(cls, **kwargs) -> NodeOutput:  # noqa: N802
        result = cls.execute(**kwargs)
        return result if isinstance(result, NodeOutput) else NodeOutput(*result)

    RETURN_TYPES = classproperty(lambda cls: [o.io_type for o in cls.define_schema().outputs])
    RETURN_NAMES = classproperty(lambda cls: [o.display_name or o.io_type for o in cls.define_schema().outputs])
    OUTPUT_TOOLTIPS = classproperty(lambda cls: [o.tooltip for o in cls.define_schema().outputs])
    DESCRIPTION = classproperty(lambda cls: cls.define_schema().description)
    CATEGORY = classproperty(lambda cls: cls.define_schema().category)
    OUTPUT_NODE = classproperty(lambda cls: cls.define_schema().is_output_node)
    DEPRECATED = classproperty(lambda cls: cls.define_schema().is_deprecated)


class ComfyExtension:
    async def on_load(self) -> None:
        pass

    async def get_node_list(self) -> list[type[ComfyNode]]:
        raise NotImplementedError
