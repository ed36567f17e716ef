"""Golden-case runners for the conformance runner (python -m conformance), one file per model family."""
