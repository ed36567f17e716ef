"""Reading tensors from checkpoint files: .safetensors, or a torch pickle (.pth/.pt/.ckpt/.bin).

    with CheckpointFile(path) as f:       # safetensors: only the header is read here
        f.keys, f.shape(key), f.dtype(key), f.metadata
        tensor = f.get(key)               # one tensor at a time

Torch files are loaded with weights_only=True (never a plain unpickle), memory-mapped when they are zip archives,
and unwrapped from the usual training wrappers. What a file *is* (an Ovi model, a VAE, a text encoder) is left to
each loader; this module only reads, and names empty, truncated and unreadable files clearly.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import torch

from .errors import WrongFileError

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
# Wrappers around a state dict, tried in order: DeepSpeed/DDP "module", {"app": {"model": ...}}, Lightning
# "state_dict", "model", and MMAudio's best_netG.pt "generator".
WRAPPERS = (("module",), ("app", "model"), ("state_dict",), ("model",), ("generator",))


def read_safetensors_header(path: Path) -> tuple[dict, dict]:
    """(tensor entries, metadata) of a safetensors file; WrongFileError if it is not one or is truncated."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WrongFileError(f"{path.name} is empty or not a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 2**20):
            if size - 8 < n <= 100 * 2**20 and f.read(1) == b"{":
                raise WrongFileError(f"{path.name} is truncated: its header alone needs {8 + n:,} bytes but the file "
                                     f"has {size:,}; the download did not finish — download it again")
            raise WrongFileError(f"{path.name} is not a safetensors file (its first bytes are not a safetensors header)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise WrongFileError(f"{path.name} is not a safetensors file (unreadable header)") from None
    metadata = header.pop("__metadata__", None) or {}
    end = max((e["data_offsets"][1] for e in header.values()), default=0)
    if 8 + n + end > size:
        raise WrongFileError(
            f"{path.name} is truncated: its header describes {8 + n + end:,} bytes but the file has {size:,}; "
            "the download did not finish — download it again"
        )
    return header, metadata


def sniff_format(path: Path) -> str:
    """The file's format, "safetensors" or "torch": from its first bytes (JSON header, zip, pickle), else its suffix."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80" or path.suffix.lower() in TORCH_SUFFIXES:
        return "torch"
    return "safetensors"


def load_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a torch file (weights_only=True, mmap for zip archives), unwrapped from WRAPPERS."""
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip = head == b"PK\x03\x04"  # the legacy (non-zip) format cannot be memory-mapped
    if not is_zip and head[:1] != b"\x80":
        kind = "empty" if not head else f"its first bytes are {head!r}"
        raise WrongFileError(f"{path.name} is neither a safetensors file nor a PyTorch checkpoint ({kind}); it is not a "
                             "weights file, or the download was replaced by an error page — download it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as exc:
        if isinstance(exc, pickle.UnpicklingError) and (is_zip or head[:1] == b"\x80"):  # a real pickle, refused
            raise WrongFileError(
                f"{path.name} contains Python objects other than tensors, so it was not unpickled (only weights_only "
                "loading is allowed, for safety). It is not a plain state dict; use the original download or a "
                ".safetensors copy."
            ) from None
        # anything else means a truncated, corrupt or non-weights file
        reason = str(exc).partition("\n")[0].partition(". ")[0][:200]
        raise WrongFileError(
            f"{path.name} could not be read as a PyTorch checkpoint ({type(exc).__name__}: {reason}). The file is "
            "truncated, corrupt or not a weights file (.safetensors or a torch .pth/.pt state dict); download it again."
        ) from None
    obj = _unwrap(obj)
    if not _is_state_dict(obj):
        raise WrongFileError(f"{path.name} is a PyTorch file but not a plain state dict of tensors")
    return obj


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj, depth: int = 3):
    """The state dict inside WRAPPERS (a wrapper may sit inside another); anything else is returned as is."""
    if depth == 0 or not isinstance(obj, dict) or _is_state_dict(obj):
        return obj
    for keys in WRAPPERS:
        inner = obj
        for k in keys:
            inner = inner.get(k) if isinstance(inner, dict) else None
        if isinstance(inner, dict) and inner:
            return _unwrap(inner, depth - 1)
    return obj


class CheckpointFile:
    """Keys, shapes, dtypes and metadata up front (a safetensors file: from its header only), tensors one at a time."""

    def __init__(self, path: str | os.PathLike, what: str = "checkpoint"):
        self.path = Path(path)
        if not self.path.is_file():
            raise WrongFileError(f"{what} file not found: {self.path}")
        self.format = sniff_format(self.path)
        self._st = None  # safetensors reader, opened on the first get()
        self._sd: dict[str, torch.Tensor] | None = None
        if self.format == "torch":
            self._sd = load_torch_state_dict(self.path)
            self._header, self.metadata = {}, {}
            self.keys = list(self._sd)
        else:
            self._header, self.metadata = read_safetensors_header(self.path)
            self.keys = list(self._header)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._sd[key].shape) if self._sd is not None else tuple(self._header[key]["shape"])

    def dtype(self, key: str) -> str:
        """As stored: a safetensors name ("BF16", "F8_E4M3") or a torch dtype ("torch.bfloat16")."""
        return str(self._sd[key].dtype) if self._sd is not None else self._header[key]["dtype"]

    def get(self, key: str) -> torch.Tensor:
        if self._sd is not None:
            return self._sd[key]
        try:
            if self._st is None:
                from safetensors import safe_open

                self._st = safe_open(str(self.path), framework="pt", device="cpu")
            return self._st.get_tensor(key)
        except Exception as exc:  # a corrupt file fails here with safetensors' own error
            raise WrongFileError(
                f"{self.path.name} could not be read ({type(exc).__name__}: {exc}); the file is corrupt"
            ) from None

    def close(self) -> None:
        self._st = self._sd = None

    def __enter__(self) -> CheckpointFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Every tensor of a file at once (for the small ones: VAEs, vocoder). `what` names the file in errors."""
    with CheckpointFile(path, what) as f:
        return {k: f.get(k) for k in f.keys}
