"""ComfyUI-Ovi: ComfyUI entry point. ComfyUI calls ``comfy_entrypoint()`` (V3: a ComfyExtension listing the nodes).
Imports outside ComfyUI too (``NODE_LIST`` and ``comfy_entrypoint`` are then still defined, over the pack's schema
stand-in). No NODE_CLASS_MAPPINGS: ComfyUI would read it first and ignore the entry point.

ComfyUI imports this folder as a package named after the folder; the pure-PyTorch core must be importable as
``ovi_core`` (its modules import each other by that name), so it is registered under that name from this folder
when it is not importable already. Nothing else of the folder is put on sys.path.
"""

import importlib.util
import os
import sys

if "ovi_core" not in sys.modules and importlib.util.find_spec("ovi_core") is None:
    _core = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ovi_core")
    _spec = importlib.util.spec_from_file_location("ovi_core", os.path.join(_core, "__init__.py"),
                                                   submodule_search_locations=[_core])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["ovi_core"] = _module
    _spec.loader.exec_module(_module)

# The pack's requirements.txt, by the module each one provides: checked before any node is imported, so a ComfyUI
# whose Python lacks one gets one log line naming the command (not a traceback, not a failure halfway through a run).
REQUIRED_MODULES = {"safetensors": "safetensors", "numpy": "numpy", "av": "av", "transformers": "transformers",
                    "sentencepiece": "sentencepiece", "ftfy": "ftfy", "diffusers": "diffusers", "tqdm": "tqdm",
                    "pillow": "PIL"}


def missing_requirements() -> list[str]:
    """requirements.txt names whose module cannot be found in this Python."""
    return [name for name, module in REQUIRED_MODULES.items() if importlib.util.find_spec(module) is None]


def install_command() -> str:
    return f"{sys.executable} -m pip install -r {os.path.join(os.path.dirname(os.path.abspath(__file__)), 'requirements.txt')}"


_missing = missing_requirements()
if _missing:
    import logging

    logging.getLogger(__name__).error("ComfyUI-Ovi: missing Python package%s %s; no Ovi nodes are loaded. Install "
                                      "them into ComfyUI's Python and restart: %s", "s" if len(_missing) > 1 else "",
                                      ", ".join(_missing), install_command())
    NODE_CLASS_MAPPINGS: dict = {}  # ComfyUI takes this (empty) V1 mapping: no nodes, no further message
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
else:
    from .nodes import NODE_LIST, comfy_entrypoint  # noqa: E402

    __all__ = ["NODE_LIST", "comfy_entrypoint"]
