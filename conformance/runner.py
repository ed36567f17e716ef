"""Conformance runner: checks this implementation against golden vectors made by the original Ovi code.

    python -m conformance DIR          (from the repository root)

Every ``<kind>_<n>.safetensors`` in DIR whose kind is registered in ``CASE_KINDS`` is run; one line is
printed per case (name, max abs error, tolerance, pass/fail), then ``N passed, M failed``. The exit code
is non-zero on any failed case, on any case that cannot be run, and on a DIR without cases.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

# case kind (file-name prefix) -> "module:function". Each function takes the case file's path and
# returns a CaseOutcome. The runners live in conformance/cases/, one file per family.
CASE_KINDS: dict[str, str] = {
    "forward_case": "conformance.cases.forward:run",
    "sampling_case": "conformance.cases.sampling:run",
    "t5_case": "conformance.cases.text_encoder:run",
    "video_decode_case": "conformance.cases.video_vae:run_decode",
    "video_encode_case": "conformance.cases.video_vae:run_encode",
    "audio_decode_case": "conformance.cases.audio:run",
    "audio_encode_case": "conformance.cases.audio_encode:run",
}

_CASE_RE = re.compile(r"^(?P<kind>[a-z0-9_]+?_case)_(?P<index>\d+)\.safetensors$")


@dataclass(frozen=True)
class CaseOutcome:
    max_abs_err: float
    tolerance: float
    detail: str = ""  # which tensor had the largest error, etc.

    @property
    def passed(self) -> bool:
        # NaN never passes
        return self.max_abs_err <= self.tolerance


def find_cases(golden_dir: Path) -> list[tuple[str, Path]]:
    """(kind, path) of every case file in golden_dir whose kind is known, sorted by name."""
    cases = []
    for path in sorted(golden_dir.glob("*_case_*.safetensors")):
        m = _CASE_RE.match(path.name)
        if m and m.group("kind") in CASE_KINDS:
            cases.append((m.group("kind"), path))
    return cases


def _resolve(spec: str):
    module_name, func_name = spec.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def run_all(golden_dir: Path, out=sys.stdout) -> tuple[int, int]:
    """Run every case; print one line each and a summary. Returns (passed, failed)."""
    passed = failed = 0
    for kind, path in find_cases(golden_dir):
        name = path.stem
        try:
            outcome = _resolve(CASE_KINDS[kind])(path)
        except Exception as exc:  # a case that cannot run is a failure, with the reason printed
            failed += 1
            print(f"{name:<24} ERROR  could not run: {type(exc).__name__}: {exc}", file=out)
            logging.getLogger(__name__).debug("%s", traceback.format_exc())
            continue
        status = "PASS" if outcome.passed else "FAIL"
        passed += outcome.passed
        failed += not outcome.passed
        detail = f"  ({outcome.detail})" if outcome.detail else ""
        print(
            f"{name:<24} {status}  max_abs_err={outcome.max_abs_err:.3e}  tol={outcome.tolerance:.1e}{detail}",
            file=out,
        )
    print(f"{passed} passed, {failed} failed", file=out)
    return passed, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.split("\n")[0])
    parser.add_argument("golden_dir", type=Path, help="folder with *_case_*.safetensors golden files")
    parser.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of cases that cannot run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    if not args.golden_dir.is_dir():
        print(f"error: {args.golden_dir} is not a folder", file=sys.stderr)
        return 2
    if not find_cases(args.golden_dir):
        print(f"error: no golden cases (*_case_N.safetensors of a known kind) in {args.golden_dir}", file=sys.stderr)
        print("0 passed, 0 failed")
        return 1
    passed, failed = run_all(args.golden_dir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
