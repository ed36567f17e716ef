"""Conformance runner: checks ``ovi_core`` against golden vectors made by the original Ovi code.

Test tooling, not part of the runtime core (and not shipped in the wheel). Run it from the repository root:

    python -m conformance ../shared/golden/ovi_tiny
"""

from conformance.runner import CASE_KINDS, CaseOutcome, find_cases, main, run_all

__all__ = ["CASE_KINDS", "CaseOutcome", "find_cases", "main", "run_all"]
