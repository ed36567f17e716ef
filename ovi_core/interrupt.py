"""Stopping long work on request, from anywhere inside it.

Every long loop of ``ovi_core`` (transformer blocks, sampling steps, VAE chunks and tiles, text-encoder layers,
vocoder stages, muxed frames, loaded tensors) calls :func:`check` once per iteration. A front end installs what
"stop" means for it:

- the command line: a flag set by SIGINT/SIGTERM (``should_stop`` returns True -> :class:`OviInterrupted`);
- ComfyUI (``nodes/``): ``comfy.model_management.throw_exception_if_processing_interrupted``, which raises
  ComfyUI's own exception so that the server reports a cancel, not an error.

A checker either returns a true value (stop: OviInterrupted is raised) or raises its own exception. Checkers are
process-wide (ComfyUI's cancel flag is process-wide too); :func:`checking` installs one for a ``with`` block.
Without any checker :func:`check` costs one list lookup.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from ovi_core.errors import OviInterrupted

Checker = Callable[[], object]

_checkers: list[Checker] = []
_lock = threading.Lock()


def add_checker(fn: Checker) -> None:
    """Install ``fn`` until :func:`remove_checker` (the same function object) is called."""
    with _lock:
        _checkers.append(fn)


def remove_checker(fn: Checker) -> None:
    with _lock:
        for i in range(len(_checkers) - 1, -1, -1):
            if _checkers[i] is fn:
                del _checkers[i]
                return


@contextlib.contextmanager
def checking(fn: Checker | None) -> Iterator[None]:
    """``with checking(flag.is_set): ...`` — ``fn`` is consulted by every :func:`check` inside the block."""
    if fn is None:
        yield
        return
    add_checker(fn)
    try:
        yield
    finally:
        remove_checker(fn)


def check(where: str = "") -> None:
    """Raise if any installed checker asks to stop (OviInterrupted, or the checker's own exception)."""
    if not _checkers:
        return
    for fn in tuple(_checkers):
        if fn():
            raise OviInterrupted(f"stopped on request{' during ' + where if where else ''}")
