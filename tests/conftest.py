"""Shared fixtures: the golden folder, and the tiny models built from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GOLDEN = ROOT.parent / "shared" / "golden" / "ovi_tiny"

# One thread: the test tensors are tiny, and on a busy 2-core machine a second thread made small ops 10-100x
# slower (measured by three of us); CI timing stays predictable.
torch.set_num_threads(1)


def golden_path() -> Path:
    return Path(os.environ.get("OVI_GOLDEN_DIR", DEFAULT_GOLDEN))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The golden vectors. In CI (CI=true) a missing folder is a failure, elsewhere a skip."""
    path = golden_path()
    if not (path / "tiny_fusion.safetensors").exists():
        if _in_ci():
            pytest.fail(f"golden vectors not found at {path} (set OVI_GOLDEN_DIR)")
        pytest.skip(f"golden vectors not found at {path} (set OVI_GOLDEN_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_fusion(golden_dir):
    """The golden tiny fusion model, float32 (shared: do not modify it in a test)."""
    from conformance.cases.forward import tiny_model

    return tiny_model(golden_dir)


@pytest.fixture(scope="module")
def fusion():
    """The demo fusion model (ovi_core.demo), one per test module."""
    from ovi_core.demo import build_demo_fusion

    return build_demo_fusion()


@pytest.fixture(scope="module")
def texts():
    """Seeded stand-in text states: positive, video negative, audio negative (7, 5 and 6 tokens of 4096)."""
    from ovi_core.sampler import PromptEmbeddings

    g = torch.Generator().manual_seed(1)
    return PromptEmbeddings(torch.randn(7, 4096, generator=g), torch.randn(5, 4096, generator=g),
                            torch.randn(6, 4096, generator=g))


@pytest.fixture(scope="session")
def comfy_python() -> Path:
    """The Python of a ComfyUI 0.8 CPU venv with the pack's requirements (tests/comfy_server.py builds it once with
    the shared folder's make_venv.sh; skipped only when that folder is absent)."""
    from tests import comfy_server

    shared = comfy_server.shared_dir()
    if not (shared / "make_venv.sh").is_file() or not (shared / "ComfyUI" / "main.py").is_file():
        msg = f"no ComfyUI test folder at {shared} (make_venv.sh and ComfyUI/main.py; set OVI_COMFYUI_DIR)"
        if _in_ci():  # in CI the real-ComfyUI tests never skip
            pytest.fail(msg)
        pytest.skip(msg)
    return comfy_server.prepare_venv(shared, comfy_server.venv_dir())


@pytest.fixture(scope="session")
def comfy(comfy_python, tmp_path_factory):
    """One real ComfyUI server for every tests/test_comfy_*.py file (tests/comfy_server.py). They share its folders:
    a test compares output/ before and after instead of expecting it empty, and what it writes into models/ or input/
    either has a name no other test asks for or is removed again."""
    from tests import comfy_server

    server = comfy_server.start_server(comfy_python, comfy_server.shared_dir() / "ComfyUI",
                                       tmp_path_factory.mktemp("comfy"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def info(comfy) -> dict:
    """The server's /object_info: every node's definition."""
    status, answer = comfy.get("/object_info", timeout=60)
    assert status == 200, answer
    return answer


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
