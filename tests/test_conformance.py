"""The conformance runner: one line per case, a summary line, and an exit code that means something."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent


def _runner(folder: Path, module: str = "conformance", cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, str(folder)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _copy(golden_dir: Path, dest: Path, names: list[str]) -> None:
    for n in names:
        shutil.copy(golden_dir / n, dest / n)


def test_full_golden_folder_passes(golden_dir):
    r = _runner(golden_dir)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0, r.stdout + r.stderr
    assert lines[-1].endswith(" passed, 0 failed")
    assert int(lines[-1].split()[0]) == len(lines) - 1 >= 3
    assert all(" PASS " in line for line in lines[:-1])


def test_forward_cases_pass_and_print_one_line_each(golden_dir, tmp_path):
    _copy(golden_dir, tmp_path, ["tiny_config.json", "tiny_fusion.safetensors"]
          + [f"forward_case_{i}.{ext}" for i in range(3) for ext in ("safetensors", "json")])
    r = _runner(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "3 passed, 0 failed"
    assert [line.split()[0] for line in lines[:-1]] == ["forward_case_0", "forward_case_1", "forward_case_2"]
    assert all("tol=1.0e-04" in line for line in lines[:-1])


def test_a_wrong_expected_output_fails(golden_dir, tmp_path):
    _copy(golden_dir, tmp_path, ["tiny_config.json", "tiny_fusion.safetensors"])
    d = load_file(str(golden_dir / "forward_case_0.safetensors"))
    d["out.video"] = d["out.video"] + 1e-3
    save_file(d, str(tmp_path / "forward_case_0.safetensors"))
    r = _runner(tmp_path)
    assert r.returncode == 1
    assert "FAIL" in r.stdout and r.stdout.strip().endswith("0 passed, 1 failed")


def test_a_case_that_cannot_run_fails(golden_dir, tmp_path):
    shutil.copy(golden_dir / "forward_case_0.safetensors", tmp_path)  # no model file beside it
    r = _runner(tmp_path)
    assert r.returncode == 1
    assert "ERROR" in r.stdout and r.stdout.strip().endswith("0 passed, 1 failed")


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_no_cases_is_an_error(tmp_path, make):
    folder = tmp_path if make == "empty" else tmp_path / "nope"
    r = _runner(folder)
    assert r.returncode != 0


def test_the_old_command_forwards_to_the_new_runner(golden_dir, tmp_path):
    """`python -m ovi_core.conformance` is a deprecated alias: one line on stderr, then the same output and exit code."""
    _copy(golden_dir, tmp_path, ["tiny_config.json", "tiny_fusion.safetensors"]
          + [f"forward_case_{i}.{ext}" for i in range(3) for ext in ("safetensors", "json")])
    new, old = _runner(tmp_path), _runner(tmp_path, module="ovi_core.conformance")
    assert old.returncode == new.returncode == 0, old.stdout + old.stderr
    assert old.stdout == new.stdout
    assert old.stderr.strip() == "moved to python -m conformance"
    missing = _runner(tmp_path / "nope", module="ovi_core.conformance")
    assert missing.returncode == 2


def test_the_old_command_says_where_the_runner_lives_when_it_is_not_importable(tmp_path):
    """Outside the repository root (only ovi_core on the path) the alias names the new command instead of failing."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "ovi_core.conformance", str(tmp_path)], cwd=elsewhere,
                       env={**os.environ, "PYTHONPATH": str(_only_ovi_core(tmp_path))},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "python -m conformance" in r.stderr and "Traceback" not in r.stderr


def _only_ovi_core(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    shutil.copytree(ROOT / "ovi_core", site / "ovi_core", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def test_importing_the_alias_runs_and_imports_nothing():
    code = "import sys, ovi_core.conformance; print([m for m in sys.modules if m.split('.')[0] == 'conformance'])"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]" and r.stderr == "", r.stdout + r.stderr
