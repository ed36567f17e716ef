"""The conformance runner: one line per case, a summary line, and an exit code that means something."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent


def _runner(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovi_core.conformance", str(folder)], cwd=ROOT,
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
