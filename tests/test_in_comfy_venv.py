"""The tests that need ComfyUI importable in-process (tests/test_native_model.py, tests/test_native_nodes.py: core
samplers, guiders and node classes driving the Ovi MODEL) run in ComfyUI's own venv, with a copy of its tree on
PYTHONPATH; this test runs them there as part of the normal suite and fails with their output if any fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ("tests/test_native_model.py", "tests/test_native_nodes.py", "tests/test_lora.py", "tests/test_av_nodes.py",
         "tests/test_step_cache.py", "tests/test_compile.py")


def test_native_model_and_nodes_inside_comfyui_venv(comfy_python, tmp_path):
    from tests import comfy_server

    tree = tmp_path / "ComfyUI"
    shutil.copytree(comfy_server.shared_dir() / "ComfyUI", tree, symlinks=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(ROOT)])
    r = subprocess.run([str(comfy_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *FILES],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, tail
    summary = re.search(r"(\d+) passed", r.stdout)
    assert summary and int(summary.group(1)) >= 30 and " skipped" not in r.stdout.splitlines()[-1], tail
