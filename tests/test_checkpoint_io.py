"""Reading checkpoint files: header-only inspection, torch wrappers, and clear errors for broken files."""

from __future__ import annotations

import builtins

import pytest
import safetensors
import torch
from safetensors.torch import save_file

from ovi_core import checkpoint_io
from ovi_core.checkpoint_io import CheckpointFile, read_checkpoint
from ovi_core.errors import WrongFileError


@pytest.fixture
def sd() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b.bias": torch.ones(4, dtype=torch.bfloat16)}


def test_safetensors_inspection_reads_only_the_header(tmp_path, sd, monkeypatch):
    path = tmp_path / "big.safetensors"
    save_file({**sd, "big": torch.zeros(1024, 1024)}, str(path), metadata={"ovi_variant": "960x960_5s"})  # 4 MiB
    read = []

    class CountingFile:
        def __init__(self, *args):
            self.f = builtins.open(*args)

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def no_data(*args, **kwargs):
        raise AssertionError("tensor data was read")

    monkeypatch.setattr(checkpoint_io, "open", CountingFile, raising=False)
    monkeypatch.setattr(safetensors, "safe_open", no_data)
    with CheckpointFile(path) as f:
        assert f.format == "safetensors" and set(f.keys) == {"a.weight", "b.bias", "big"}
        assert f.shape("a.weight") == (2, 3) and f.shape("big") == (1024, 1024)
        assert f.dtype("b.bias") == "BF16" and f.metadata == {"ovi_variant": "960x960_5s"}
    assert 0 < sum(read) < 1024  # the header, not the 4 MiB of data
    monkeypatch.undo()
    with CheckpointFile(path) as f:
        assert torch.equal(f.get("a.weight"), sd["a.weight"])


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"module": sd},
        lambda sd: {"app": {"model": sd}},
        lambda sd: {"state_dict": {"model": sd}, "epoch": 3},
        lambda sd: {"generator": sd, "steps": 1_000_000},  # MMAudio's best_netG.pt
    ],
)
def test_torch_files_are_unwrapped(tmp_path, sd, wrap):
    path = tmp_path / "model.pth"
    torch.save(wrap(sd), path)
    with CheckpointFile(path) as f:
        assert f.format == "torch" and f.keys == ["a.weight", "b.bias"]
        assert f.shape("a.weight") == (2, 3) and f.dtype("b.bias") == "torch.bfloat16"
        assert torch.equal(f.get("a.weight"), sd["a.weight"])
    assert read_checkpoint(path).keys() == sd.keys()


def test_format_is_read_from_the_content_before_the_name(tmp_path, sd):
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # not memory-mappable
    save_file(sd, str(tmp_path / "really_safetensors.pth"))
    for name in ("legacy.pt", "really_safetensors.pth"):
        assert torch.equal(read_checkpoint(tmp_path / name)["a.weight"], sd["a.weight"])


def test_truncated_files(tmp_path, sd):
    sd = {**sd, "big": torch.zeros(256, 256)}  # the header fits in the first half
    for name, save in (("cut.safetensors", lambda p: save_file(sd, str(p))), ("cut.pth", lambda p: torch.save(sd, p))):
        path = tmp_path / name
        save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(WrongFileError, match="truncated"):
            CheckpointFile(path)


def test_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / "page.safetensors").write_text("<html>404 Not Found</html>" * 10)
    (tmp_path / "page.pth").write_text("<html>404 Not Found</html>" * 10)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "bad_header.safetensors").write_bytes(b"\x09\x00\x00\x00\x00\x00\x00\x00{not json")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    for name, match in [("page.safetensors", "not a safetensors file"), ("page.pth", "not a weights file"),
                        ("empty.safetensors", "empty or not a"),
                        ("bad_header.safetensors", r"not a safetensors file \(unreadable header\)"),
                        ("list.pth", "not a plain state dict of tensors"), ("gone.pth", "video VAE file not found")]:
        with pytest.raises(WrongFileError, match=match):
            read_checkpoint(tmp_path / name, "video VAE")


class _Payload:
    pass


def test_pickled_code_is_never_run(tmp_path, sd):
    torch.save({**sd, "payload": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(WrongFileError, match="Python objects other than tensors"):
        CheckpointFile(tmp_path / "evil.pth")
