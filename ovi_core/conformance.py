"""Deprecated alias: the conformance runner moved out of the runtime core to ``conformance/`` at the repository root.

    python -m conformance DIR          (from the repository root; this alias forwards there)

Importing this module imports nothing; only running it as ``python -m ovi_core.conformance`` does.
"""

import sys


def _forward(argv: list[str]) -> int:
    try:
        from conformance.runner import main
    except ImportError:
        print("the conformance runner moved to conformance/ at the repository root (test tooling, not installed with "
              "ovi_core): run `python -m conformance DIR` from the repository root", file=sys.stderr)
        return 2
    print("moved to python -m conformance", file=sys.stderr)
    return main(argv)


if __name__ == "__main__":
    sys.exit(_forward(sys.argv[1:]))
