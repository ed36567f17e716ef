"""ComfyUI in this process, for the tests that drive core's samplers and nodes on the Ovi MODEL (test_native_model,
test_native_nodes, test_lora, test_av_nodes).

Importing this module skips the importing test module where ComfyUI's ``comfy`` package is not importable (the normal
venv); tests/test_in_comfy_venv.py runs those files in ComfyUI's venv with its tree on PYTHONPATH. Where it imports,
ComfyUI is set up as ``main.py --cpu`` would (no argument parsing), and the pack's ``nodes/`` files and ComfyUI's own
``nodes.py`` are loaded by path: the two share the name ``nodes``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

try:  # ComfyUI's `comfy` is a namespace package: look for one of its modules
    _SPEC = importlib.util.find_spec("comfy.model_management")
except ImportError:
    _SPEC = None
if _SPEC is None:
    pytest.skip("ComfyUI is not importable here (run with ComfyUI's venv and its tree on PYTHONPATH)",
                allow_module_level=True)

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing(False)
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True

ROOT = Path(__file__).resolve().parent.parent
COMFY_DIR = Path(_SPEC.origin).resolve().parent.parent
PACKAGE = "ovi_native_nodes_pkg"  # the pack's nodes/ folder as a package whose __init__ is not run


def load_nodes_module(name: str):
    """nodes/<name>.py as a submodule of a bare package: its relative imports resolve inside nodes/, while the pack's
    ``nodes`` package (which would shadow ComfyUI's nodes.py) is never imported."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(ROOT / "nodes")]
        sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.{name}")


def load_file(name: str, path: Path):
    """A module by file path, under ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def nodes_module_as(module: types.ModuleType):
    """``module`` is ``sys.modules["nodes"]`` inside the block (ComfyUI's node files ``import nodes``); the previous
    entry, or none, afterwards."""
    saved = sys.modules.get("nodes")
    sys.modules["nodes"] = module
    try:
        yield module
    finally:
        if saved is None:
            sys.modules.pop("nodes", None)
        else:
            sys.modules["nodes"] = saved


def load_core(*paths: str) -> tuple[types.ModuleType, ...]:
    """ComfyUI's nodes.py, then each file of its tree in ``paths`` (as ``comfy_<stem>``): ComfyUI's nodes.py is
    installed as ``nodes`` only while they import."""
    spec = importlib.util.spec_from_file_location("nodes", COMFY_DIR / "nodes.py")
    core_nodes = importlib.util.module_from_spec(spec)
    with nodes_module_as(core_nodes):
        spec.loader.exec_module(core_nodes)
        return (core_nodes, *(load_file(f"comfy_{Path(p).stem}", COMFY_DIR / p) for p in paths))


def out(node_output):
    """A node's outputs, from a V3 NodeOutput or a V1 tuple."""
    return node_output.result if hasattr(node_output, "result") else node_output


def one(node_output):
    """The single output of a node."""
    (value,) = out(node_output)
    return value
