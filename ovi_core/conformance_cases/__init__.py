"""Golden-case runners for ovi_core.conformance, one file per model family."""
