"""Exceptions that carry a message a user can act on.

Every error raised for bad user input (a wrong file, a bad size, an over-long prompt) is an OviError, so
callers (the nodes, the command line) can show its message as is instead of a traceback.
"""


class OviError(Exception):
    """Base class: the message says what is wrong and what to do."""


class WrongFileError(OviError):
    """A file is missing, of the wrong kind, truncated or corrupt."""


class OviInputError(OviError, ValueError):
    """An argument (size, steps, guidance, tensor shape, prompt) is invalid."""


class OviInterrupted(OviError):
    """Work was stopped on request (e.g. ComfyUI's cancel button) between two steps."""
