"""ovi_core must not import ComfyUI, and the pack must import without it."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_comfy_import_statement_in_ovi_core():
    pattern = re.compile(r"^\s*(import|from)\s+(comfy|comfy_api|comfy_extras|folder_paths|server|nodes)\b", re.M)
    offenders = [str(p) for p in (ROOT / "ovi_core").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_importing_every_ovi_core_module_loads_no_comfy_module():
    code = (
        "import importlib, pkgutil, sys, ovi_core\n"
        "for m in pkgutil.walk_packages(ovi_core.__path__, 'ovi_core.'):\n"
        "    if m.name != 'ovi_core.__main__': importlib.import_module(m.name)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('comfy', 'comfy_api', 'comfy_extras', 'folder_paths')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
