"""The command line under hostile input: one table of cases, each run through ``ovi_core.cli.main``.

Every case asserts the exit code, the key words of the message, that no traceback was printed, that nothing was
loaded (a bad input is refused before any model is built), that no partial or hidden file was left and that no file
that existed before was changed or added. A few cases need real processes (signals, SIGKILL leftovers, two runs at
once, another working folder); they follow the table.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ovi_core import cli, outpaths
from ovi_core.mux import probe_mp4

ROOT = Path(__file__).resolve().parent.parent
P = "A cat plays the piano. <AUDCAP>Piano music.<ENDAUDCAP>"
W = "{W}"  # replaced by the folder of demo weight files (written once per module)
BAD_UTF8 = os.fsdecode(b"caf\xe9 <S>hello<E>")  # how a non-UTF-8 argument reaches Python (PEP 383)


# ---- setups: files a case needs, written into its (empty) working folder -----------------------------------------
def write(name: str, data: bytes | str):
    def setup(tmp: Path, weights: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def png(name: str, mode: str = "RGB", size=(40, 30)):
    def setup(tmp: Path, weights: Path) -> None:
        from PIL import Image

        Image.new(mode, size).save(tmp / name)

    return setup


def truncated_png(name: str):
    def setup(tmp: Path, weights: Path) -> None:
        from PIL import Image

        rng = np.random.default_rng(0)
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp / "full.png")
        data = (tmp / "full.png").read_bytes()
        (tmp / name).write_bytes(data[: len(data) // 2])

    return setup


def nan_tiff(name: str):
    def setup(tmp: Path, weights: Path) -> None:
        from PIL import Image

        a = np.full((16, 16), np.nan, np.float32)
        Image.fromarray(a, mode="F").save(tmp / name)

    return setup


def folder(name: str):
    def setup(tmp: Path, weights: Path) -> None:
        (tmp / name).mkdir(parents=True, exist_ok=True)

    return setup


def weights_with(part: str, make_bad):
    """A reference-layout weights folder ``ckpts/`` linking to the good demo files, with ``part`` replaced."""
    layout = {"fusion": "Ovi/model.safetensors", "text": "Wan2.2-TI2V-5B/models_t5_umt5-xxl-enc-bf16.pth",
              "vae": "Wan2.2-TI2V-5B/Wan2.2_VAE.pth", "audio": "MMAudio/ext_weights/v1-16.pth",
              "vocoder": "MMAudio/ext_weights/best_netG.pt", "spiece": "Wan2.2-TI2V-5B/google/umt5-xxl/spiece.model"}

    def setup(tmp: Path, weights: Path) -> None:
        for key, rel in layout.items():
            target = tmp / "ckpts" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if key == part:
                target.write_bytes(make_bad(weights, layout))
            else:
                target.symlink_to(weights / rel)

    return setup


def truncated(rel: str):
    return lambda weights, layout: (weights / rel).read_bytes()[:5000]


def copy_of(rel: str):
    return lambda weights, layout: (weights / rel).read_bytes()


def safetensors_of(tensors: dict):
    def make(weights, layout) -> bytes:
        from safetensors.torch import save

        return save(tensors)

    return make


def code_pickle(weights, layout) -> bytes:
    """A torch file whose pickle would create ``PWNED`` in the working folder if it were ever executed."""
    import io

    import torch

    class Evil:
        def __reduce__(self):
            return (open, ("PWNED", "w"))

    buf = io.BytesIO()
    torch.save({"weight": Evil()}, buf)
    return buf.getvalue()


def _fusion_rewritten(weights, layout, change) -> bytes:
    """The demo fusion file with its tensors changed by ``change(dict)``, metadata kept (it holds the config)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    path = str(weights / layout["fusion"])
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    return save(change(load_file(path)), metadata=metadata)


def int8_fusion(weights, layout) -> bytes:
    return _fusion_rewritten(weights, layout, lambda sd: {
        k: (v * 0).to(torch_int8()) if k.endswith("ffn.0.weight") else v for k, v in sd.items()})


def fusion_without(prefix: str):
    return lambda weights, layout: _fusion_rewritten(weights, layout, lambda sd: {
        k: v for k, v in sd.items() if not k.startswith(prefix)})


def torch_int8():
    import torch

    return torch.int8


def both_env(tmp: Path, weights: Path) -> None:
    os.environ[cli.ENV_CKPT_DIR] = str(tmp / "a")
    os.environ[cli.ENV_COMFY_MODELS] = str(tmp / "b")


# ---- the table: (id, argv, exit code, key words of the message, setup, denied errno) --------------------------------
def case(id_, argv, code, words, setup=None, deny=None):
    return pytest.param(argv, code, words, setup, deny, id=id_)


G = ["generate", "-p", P]
CASES = [
    # -- commands and help
    case("no-command", [], 2, ["required"]),
    case("unknown-command", ["paint"], 2, ["invalid choice"]),
    case("help-lists-exit-codes", ["--help"], 0, ["exit codes", "130", "143", "weight files missing"]),
    case("generate-help-lists-exit-codes", ["generate", "--help"], 0, ["exit codes", "interrupted", "terminated"]),
    case("check-weights-help", ["check-weights", "--help"], 0, ["exit codes", "pickles are never executed"]),
    case("no-prompt", ["generate"], 2, ["-p/--prompt", "required"]),
    case("prompt-and-prompts", ["generate", "-p", P, "--prompts", "p.txt"], 2, ["not allowed with"]),
    case("unknown-option", [*G, "--colour", "red"], 2, ["unrecognized arguments"]),
    # -- sizes
    case("width-0", [*G, "--width", "0"], 2, ["--width", "between 1 and 16384"]),
    case("width-negative", [*G, "--width", "-64"], 2, ["--width"]),
    case("width-huge", [*G, "--width", "16385"], 2, ["--width", "16384"]),
    case("width-text", [*G, "--width", "wide"], 2, ["--width", "whole number", "'wide'"]),
    case("width-fraction", [*G, "--width", "64.5"], 2, ["--width", "whole number"]),
    case("width-empty", [*G, "--width", ""], 2, ["--width", "whole number"]),
    case("height-0", [*G, "--height", "0"], 2, ["--height", "between 1 and 16384"]),
    case("height-huge", [*G, "--height", "99999"], 2, ["--height", "16384"]),
    case("extreme-aspect-ratio", [*G, "--width", "16384", "--height", "32"], 2,
         ["aspect ratio", "too large", "at most"]),
    case("extreme-aspect-ratio-tall", [*G, "--width", "1", "--height", "4000"], 2, ["aspect ratio", "too large"]),
    # -- video quality and tiles
    case("crf-negative", [*G, "--crf", "-1"], 2, ["--crf", "between 0 and 51"]),
    case("crf-52", [*G, "--crf", "52"], 2, ["--crf", "between 0 and 51"]),
    case("crf-100", [*G, "--crf", "100"], 2, ["--crf", "51"]),
    case("crf-text", [*G, "--crf", "best"], 2, ["--crf", "whole number"]),
    case("crf-float", [*G, "--crf", "18.5"], 2, ["--crf", "whole number"]),
    case("vae-tile-0x0", [*G, "--vae-tile", "0x0"], 2, ["--vae-tile", "between 24 and 1024"]),
    case("vae-tile-0", [*G, "--vae-tile", "0"], 2, ["--vae-tile", "between 24 and 1024"]),
    case("vae-tile-too-small", [*G, "--vae-tile", "8x8"], 2, ["--vae-tile", "overlap"]),
    case("vae-tile-too-large", [*G, "--vae-tile", "4096x32"], 2, ["--vae-tile", "1024"]),
    case("vae-tile-garbage", [*G, "--vae-tile", "axb"], 2, ["--vae-tile", "HxW"]),
    case("vae-tile-half", [*G, "--vae-tile", "32x"], 2, ["--vae-tile", "HxW"]),
    case("vae-tile-negative", [*G, "--vae-tile=-32x32"], 2, ["--vae-tile", "HxW"]),
    # -- sampling
    case("steps-0", [*G, "--steps", "0"], 2, ["--steps", "between 1 and 1000"]),
    case("steps-negative", [*G, "--steps", "-5"], 2, ["--steps"]),
    case("steps-too-many", [*G, "--steps", "1001"], 2, ["--steps", "1000"]),
    case("steps-text", [*G, "--steps", "many"], 2, ["--steps", "whole number"]),
    case("steps-float", [*G, "--steps", "2.5"], 2, ["--steps", "whole number"]),
    case("seed-negative", [*G, "--seed", "-1"], 2, ["--seed", "2**64"]),
    case("seed-too-big", [*G, "--seed", str(2**64)], 2, ["--seed", "2**64"]),
    case("seed-text", [*G, "--seed", "lucky"], 2, ["--seed", "whole number"]),
    case("seed-plus-repeat-overflows", [*G, "--seed", str(2**64 - 1), "--repeat", "2"], 2, ["seed", "2**64 - 1"]),
    case("shift-nan", [*G, "--shift", "nan"], 2, ["--shift", "finite"]),
    case("shift-inf", [*G, "--shift", "inf"], 2, ["--shift", "finite"]),
    case("shift-minus-inf", [*G, "--shift=-inf"], 2, ["--shift", "finite"]),
    case("shift-zero", [*G, "--shift", "0"], 2, ["argument --shift: shift must be a number > 0"]),  # at parse time
    case("shift-negative", [*G, "--shift", "-1"], 2, ["shift must be a number > 0"]),
    case("shift-text", [*G, "--shift", "high"], 2, ["--shift", "expected a number"]),
    case("video-guidance-nan", [*G, "--video-guidance", "nan"], 2, ["--video-guidance", "finite"]),
    case("video-guidance-inf", [*G, "--video-guidance", "inf"], 2, ["--video-guidance", "finite"]),
    case("video-guidance-negative", [*G, "--video-guidance", "-1"], 2, ["video_guidance", ">= 0"]),
    case("audio-guidance-nan", [*G, "--audio-guidance", "NaN"], 2, ["--audio-guidance", "finite"]),
    case("audio-guidance-negative", [*G, "--audio-guidance", "-0.5"], 2, ["audio_guidance", ">= 0"]),
    case("slg-layer-past-the-model", [*G, "--slg-layer", "3"], 2, ["slg_layer", "between -1 and 2"]),
    case("slg-layer-below-minus-1", [*G, "--slg-layer", "-2"], 2, ["--slg-layer", "whole number >= -1"]),
    case("slg-layer-text", [*G, "--slg-layer", "middle"], 2, ["--slg-layer", "whole number"]),
    case("slg-layer-huge", [*G, "--slg-layer", str(2**40)], 2, ["slg_layer", "past the model's 3 fused blocks"]),
    case("cache-threshold-negative", [*G, "--cache-threshold", "-0.1"], 2, ["argument --cache-threshold", ">= 0"]),
    case("sync-guidance-inf", [*G, "--sync-guidance", "inf"], 2, ["argument --sync-guidance", "finite"]),
    case("solver-unknown", [*G, "--solver", "ddim"], 2, ["--solver", "invalid choice"]),
    case("repeat-0", [*G, "--repeat", "0"], 2, ["--repeat", "between 1 and 1000"]),
    case("repeat-negative", [*G, "--repeat", "-2"], 2, ["--repeat"]),
    case("repeat-too-many", [*G, "--repeat", "100000"], 2, ["--repeat", "1000"]),
    case("threads-0", [*G, "--threads", "0"], 2, ["--threads", "between 1"]),
    case("threads-huge", [*G, "--threads", "100000"], 2, ["--threads", "cores"]),
    case("threads-text", [*G, "--threads", "all"], 2, ["--threads", "whole number"]),
    # -- runtime: device and dtypes
    case("device-banana", [*G, "--device", "banana"], 2, ["--device 'banana'", "not a device name", "cpu"]),
    case("device-empty", [*G, "--device", ""], 2, ["not a device name", "cpu"]),
    case("device-cuda-unavailable", [*G, "--device", "cuda"], 2, ["CUDA is not available", "available: cpu"]),
    case("device-cuda-7", [*G, "--device", "cuda:7"], 2, ["--device cuda:7", "available"]),
    case("device-cuda-garbage-index", [*G, "--device", "cuda:x"], 2, ["not a device name"]),
    case("device-mps-unavailable", [*G, "--device", "mps"], 2, ["MPS is not available", "available: cpu"]),
    case("device-meta", [*G, "--device", "meta"], 2, ["runs on cpu, cuda or mps", "meta"]),
    case("device-upper-case", [*G, "--device", "CPU"], 2, ["not a device name"]),
    case("dtype-unknown", [*G, "--dtype", "fp64"], 2, ["--dtype", "invalid choice"]),
    case("weight-dtype-unknown", [*G, "--weight-dtype", "int4"], 2, ["--weight-dtype", "invalid choice"]),
    case("vae-dtype-unknown", [*G, "--vae-dtype", "fp8"], 2, ["--vae-dtype", "invalid choice"]),
    case("attention-unknown", [*G, "--attention", "xformers"], 2, ["--attention", "invalid choice"]),
    case("variant-unknown", [*G, "--variant", "1080p"], 2, ["--variant", "invalid choice"]),
    case("fp16-compute-on-cpu", [*G, "--ckpt-dir", W, "--device", "cpu", "--dtype", "fp16"], 2,
         ["--dtype fp16 on the CPU", "bf16"]),
    case("fp16-vae-on-cpu", [*G, "--ckpt-dir", W, "--device", "cpu", "--vae-dtype", "fp16"], 2,
         ["--vae-dtype fp16 on the CPU"]),
    case("fp8-for-960", [*G, "--ckpt-dir", W, "--fp8", "--variant", "960x960_5s"], 2, ["fp8", "only for the 720x720_5s"]),
    # -- prompt text
    case("prompt-empty", ["generate", "-p", ""], 2, ["prompt is empty"]),
    case("prompt-blank", ["generate", "-p", " \t "], 2, ["prompt is empty"]),
    case("prompt-not-utf8", ["generate", "-p", BAD_UTF8], 2, ["--prompt text is not valid UTF-8", "0xe9",
                                                              "byte offset 3"]),
    case("prompt-nul", ["generate", "-p", "a\x00b"], 2, ["NUL"]),
    case("video-negative-not-utf8", [*G, "--video-negative", BAD_UTF8], 2, ["--video-negative", "UTF-8", "offset 3"]),
    case("audio-negative-not-utf8", [*G, "--audio-negative", os.fsdecode(b"\xff")], 2, ["--audio-negative", "0xff",
                                                                                        "offset 0"]),
    # -- prompts files
    case("prompts-missing", ["generate", "--prompts", "nope.txt"], 2, ["nope.txt does not exist"]),
    case("prompts-is-folder", ["generate", "--prompts", "d"], 2, ["is a folder"], folder("d")),
    case("prompts-latin1", ["generate", "--prompts", "p.txt"], 2, ["p.txt is not UTF-8", "0xe9", "offset 11",
                                                                  "line 2"], write("p.txt", b"first line\n\xe9t\xe9\n")),
    case("prompts-binary", ["generate", "--prompts", "p.txt"], 2, ["not UTF-8", "offset 0"],
         write("p.txt", b"\x89PNG\r\n\x1a\n\x00\x00")),
    case("prompts-nul", ["generate", "--prompts", "p.txt"], 2, ["NUL byte on line 2"], write("p.txt", "ok\nbad\x00\n")),
    case("prompts-utf16", ["generate", "--prompts", "p.txt"], 2, ["not UTF-8", "save the file as UTF-8"],
         write("p.txt", "hello\n".encode("utf-16"))),
    case("prompts-empty-file", ["generate", "--prompts", "p.txt"], 2, ["holds no prompts"], write("p.txt", "")),
    case("prompts-only-comments", ["generate", "--prompts", "p.txt"], 2, ["holds no prompts"],
         write("p.txt", "# a\n\n   \n# b\n")),
    case("csv-header-only", ["generate", "--prompts", "p.csv"], 2, ["holds no prompts"], write("p.csv", "text_prompt\n")),
    case("csv-blank-rows-only", ["generate", "--prompts", "p.csv"], 2, ["holds no prompts"],
         write("p.csv", "text_prompt,image_path\n,\n\n , \n")),
    case("csv-no-text-prompt-column", ["generate", "--prompts", "p.csv"], 2, ["no text_prompt column", "prompt"],
         write("p.csv", "prompt\nhello\n")),
    case("csv-empty-file", ["generate", "--prompts", "p.csv"], 2, ["no text_prompt column", "none"], write("p.csv", "")),
    case("csv-unterminated-quote", ["generate", "--prompts", "p.csv"], 2, ["p.csv line 3", "closing quote"],
         write("p.csv", 'text_prompt\n"fine"\n"never closed\nmore\n')),
    case("csv-stray-quote", ["generate", "--prompts", "p.csv"], 2, ["p.csv line 2", "',' expected"],
         write("p.csv", 'text_prompt,image_path\n"a"b,x\n')),
    case("csv-too-many-fields", ["generate", "--prompts", "p.csv"], 2, ["line 3", "3 fields", "double quotes"],
         write("p.csv", "text_prompt,image_path\nok,\nA dog, barking, loudly\n")),
    case("csv-empty-prompt-with-image", ["generate", "--prompts", "p.csv"], 2, ["row 2 (line 3)", "prompt is empty"],
         write("p.csv", "text_prompt,image_path\nok,\n,x.png\n")),
    case("csv-missing-image", ["generate", "--prompts", "p.csv"], 2, ["row 1 (line 2)", "nope.png does not exist"],
         write("p.csv", "text_prompt,image_path\nhello,nope.png\n")),
    case("csv-not-utf8", ["generate", "--prompts", "p.csv"], 2, ["p.csv is not UTF-8", "line 2"],
         write("p.csv", b"text_prompt\ncaf\xe9\n")),
    case("tsv-unterminated-quote", ["generate", "--prompts", "p.tsv"], 2, ["p.tsv line 2", "closing quote"],
         write("p.tsv", 'text_prompt\timage_path\n"open\tx\n')),
    case("tsv-too-many-fields", ["generate", "--prompts", "p.tsv"], 2, ["line 2", "3 fields"],
         write("p.tsv", "text_prompt\timage_path\na\tb\tc\n")),
    case("prompts-with-image", ["generate", "--prompts", "p.txt", "--image", "x.png"], 2, ["--image goes with --prompt"],
         write("p.txt", "hello\n")),
    case("prompts-with-out", ["generate", "--prompts", "p.txt", "--out", "x.mp4"], 2, ["with --prompts use --out-dir"],
         write("p.txt", "hello\n")),
    case("prompts-file-too-big", ["generate", "--prompts", "p.txt"], 2, ["bytes", "right file"],
         write("p.txt", b"a" * (cli.MAX_PROMPTS_FILE_BYTES + 1))),
    # -- start images
    case("image-missing", [*G, "--image", "nope.png"], 2, ["nope.png does not exist"]),
    case("image-is-folder", [*G, "--image", "d"], 2, ["is a folder"], folder("d")),
    case("image-not-an-image", [*G, "--image", "x.png"], 2, ["not an image", "PNG"], write("x.png", "hello world\n")),
    case("image-empty-file", [*G, "--image", "x.png"], 2, ["not an image"], write("x.png", b"")),
    case("image-truncated-png", [*G, "--image", "x.png"], 2, ["truncated or corrupt"], truncated_png("x.png")),
    case("image-truncated-jpeg", [*G, "--image", "x.jpg"], 2, ["not an image"], write("x.jpg", b"\xff\xd8\xff\xe0")),
    case("image-exr-not-readable", [*G, "--image", "x.exr"], 2, ["not an image"],
         write("x.exr", b"\x76\x2f\x31\x01" + b"\x00" * 64)),
    case("image-path-too-long", [*G, "--image", "/".join(["i" * 250] * 20) + ".png"], 2,
         ["cannot open the image", "too long"]),
    case("prompts-path-too-long", ["generate", "--prompts", "/".join(["t" * 250] * 20) + ".txt"], 2,
         ["cannot read prompts file", "too long"]),
    case("image-float-nan", [*G, "--image", "x.tiff"], 2, ["NaN"], nan_tiff("x.tiff")),
    # -- output paths
    case("out-not-mp4", [*G, "--out", "clip.avi"], 2, ["--out must name an .mp4 file"]),
    case("out-no-suffix", [*G, "--out", "clip"], 2, [".mp4"]),
    case("out-is-folder", [*G, "--out", "d.mp4"], 2, ["is a folder"], folder("d.mp4")),
    case("out-exists", [*G, "--out", "clip.mp4"], 2, ["exists already", "--overwrite"], write("clip.mp4", "old")),
    case("out-repeat-name-exists", [*G, "--out", "clip.mp4", "--repeat", "2", "--seed", "5"], 2,
         ["clip_6.mp4 exists already"], write("clip_6.mp4", "old")),
    case("out-hidden", [*G, "--out", ".clip.mp4"], 2, ["starts with a dot", "hidden"]),
    case("out-newline", [*G, "--out", "a\nb.mp4"], 2, ["control character"]),
    case("out-nul", [*G, "--out", "a\x00b.mp4"], 2, ["NUL"]),
    case("out-name-too-long", [*G, "--out", "x" * 300 + ".mp4"], 2, ["bytes", "shorten"]),
    case("out-folder-is-a-file", [*G, "--out", "f.txt/clip.mp4"], 2, ["f.txt is a file, not a folder"],
         write("f.txt", "text")),
    case("out-below-a-file", [*G, "--out", "f.txt/sub/clip.mp4"], 2, ["cannot create the folder", "is a file"],
         write("f.txt", "text")),
    case("out-dir-is-a-file", [*G, "--out-dir", "f.txt"], 2, ["f.txt is a file, not a folder"], write("f.txt", "x")),
    case("out-dir-not-utf8", [*G, "--out-dir", os.fsdecode(b"out\xff")], 2, ["--out-dir path", "UTF-8"]),
    case("out-dir-default-name-exists", [*G, "--out-dir", "o", "--seed", "7"], 2,
         ["A_cat_plays_the_piano_Piano_music_7.mp4 exists already", "--overwrite"],
         write("o/A_cat_plays_the_piano_Piano_music_7.mp4", "old")),
    case("batch-name-exists", ["generate", "--prompts", "p.txt", "--out-dir", "o", "--seed", "1"], 2,
         ["2_second_1.mp4 exists already"], lambda t, w: (write("p.txt", "first\nsecond\n")(t, w),
                                                          write("o/2_second_1.mp4", "old")(t, w))),
    case("out-folder-permission-denied", [*G, "--out", "deny/clip.mp4"], 2, ["cannot write into", "permission denied"],
         folder("deny"), errno.EACCES),
    case("out-folder-read-only-fs", [*G, "--out", "deny/clip.mp4"], 2, ["read-only"], folder("deny"), errno.EROFS),
    case("out-folder-immutable", [*G, "--out", "deny/clip.mp4"], 2, ["not permitted"], folder("deny"), errno.EPERM),
    case("out-disk-full", [*G, "--out", "deny/clip.mp4"], 2, ["disk is full"], folder("deny"), errno.ENOSPC),
    case("out-quota", [*G, "--out", "deny/clip.mp4"], 2, ["quota"], folder("deny"), errno.EDQUOT),
    case("out-dir-cannot-be-created", [*G, "--out-dir", "deny/new"], 2, ["cannot create the folder", "permission"],
         folder("deny"), errno.EACCES),
    case("overwrite-into-read-only-folder", [*G, "--out", "deny/clip.mp4", "--overwrite"], 2, ["read-only"],
         write("deny/clip.mp4", "old"), errno.EROFS),
    case("out-dir-name-too-long", [*G, "--out-dir", "d" * 300], 2, ["longer than", "255 bytes"]),
    case("out-path-too-long", [*G, "--out", "/".join(["p" * 250] * 20) + "/clip.mp4"], 2, ["too long"]),
    case("out-is-symlink-to-a-file", [*G, "--out", "link.mp4"], 2, ["exists already"],
         lambda t, w: (write("target.mp4", "old")(t, w), (t / "link.mp4").symlink_to(t / "target.mp4"))),
    case("out-is-dangling-symlink", [*G, "--out", "link.mp4"], 2, ["exists already"],
         lambda t, w: (t / "link.mp4").symlink_to(t / "nowhere.mp4")),
    # -- weights: options, missing files
    case("ckpt-dir-and-comfy-models", [*G, "--ckpt-dir", "a", "--comfy-models", "b"], 2, ["not both"]),
    case("demo-with-model", [*G, "--demo", "--model", "x.safetensors"], 2, ["--demo runs the built-in model"]),
    case("both-environment-variables", G, 2, ["both OVI_CKPT_DIR and OVI_COMFY_MODELS"], both_env),
    case("ckpt-dir-missing", [*G, "--ckpt-dir", "nowhere"], 3, ["nowhere does not exist", "Ovi/"]),
    case("ckpt-dir-empty", [*G, "--ckpt-dir", "d"], 3, ["Ovi weights not found", "huggingface.co/chetwinlow1/Ovi"],
         folder("d")),
    case("comfy-models-empty", [*G, "--comfy-models", "d"], 3, ["umt5_xxl_fp16.safetensors", "wan2.2_vae"], folder("d")),
    case("model-only", [*G, "--model", "m.safetensors"], 3, ["--text-encoder", "--video-vae", "--vocoder"]),
    case("check-weights-missing-dir", ["check-weights", "--ckpt-dir", "nowhere"], 3, ["does not exist"]),
    # -- weights: contents (generate checks headers and keys before loading; check-weights says what each file is)
    case("generate-truncated-fusion", [*G, "--ckpt-dir", "ckpts"], 3, ["model.safetensors is truncated",
                                                                      "download it again"],
         weights_with("fusion", truncated("Ovi/model.safetensors"))),
    case("check-truncated-fusion", ["check-weights", "--ckpt-dir", "ckpts"], 3, ["BAD", "truncated", "cannot be used"],
         weights_with("fusion", truncated("Ovi/model.safetensors"))),
    case("check-vae-is-the-fusion-model", ["check-weights", "--ckpt-dir", "ckpts"], 3,
         ["Wan2.2_VAE.pth is not a Wan2.2 video VAE", "Ovi fusion"],
         weights_with("vae", copy_of("Ovi/model.safetensors"))),
    case("generate-vae-is-the-fusion-model", [*G, "--ckpt-dir", "ckpts"], 3, ["not a Wan2.2 video VAE"],
         weights_with("vae", copy_of("Ovi/model.safetensors"))),
    case("check-text-encoder-is-a-vae", ["check-weights", "--ckpt-dir", "ckpts"], 3,
         ["is not a umT5 text encoder", "VAE"], weights_with("text", copy_of("Wan2.2-TI2V-5B/Wan2.2_VAE.pth"))),
    case("check-vocoder-is-text", ["check-weights", "--ckpt-dir", "ckpts"], 3,
         ["best_netG.pt is neither a safetensors file nor a PyTorch checkpoint"],
         weights_with("vocoder", lambda w, layout: b"<html>404 Not Found</html>")),
    case("check-audio-vae-is-the-vocoder", ["check-weights", "--ckpt-dir", "ckpts"], 3,
         ["not an MMAudio audio VAE", "BigVGAN"], weights_with("audio", copy_of("MMAudio/ext_weights/best_netG.pt"))),
    case("check-pickle-with-code-is-not-run", ["check-weights", "--ckpt-dir", "ckpts"], 3,
         ["Wan2.2_VAE.pth contains Python objects other than tensors", "not unpickled"],
         weights_with("vae", code_pickle)),
    case("check-empty-fusion-file", ["check-weights", "--ckpt-dir", "ckpts"], 3, ["model.safetensors is empty"],
         weights_with("fusion", lambda w, layout: b"")),
    case("check-fusion-missing-audio-tower", ["check-weights", "--ckpt-dir", "ckpts"], 3,
         ["video_model.* keys but no audio_model.*"], weights_with("fusion", fusion_without("audio_model."))),
    case("check-fusion-missing-keys", ["check-weights", "--ckpt-dir", "ckpts"], 3, ["keys missing", "incomplete"],
         weights_with("fusion", fusion_without("video_model.blocks.1."))),
    case("check-fusion-wrong-dtype", ["check-weights", "--ckpt-dir", "ckpts"], 3, ["not floating point", "wrong dtype"],
         weights_with("fusion", int8_fusion)),
    case("check-fusion-is-random-tensors", ["check-weights", "--ckpt-dir", "ckpts"], 3, ["is not an Ovi fused"],
         weights_with("fusion", lambda w, layout: safetensors_of({"foo": __import__("torch").zeros(2)})(w, layout))),
]


# ---- running a case ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from ovi_core.demo import write_demo_checkpoints

    return write_demo_checkpoints(tmp_path_factory.mktemp("weights"), "reference")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    monkeypatch.delenv(cli.ENV_CKPT_DIR, raising=False)
    monkeypatch.delenv(cli.ENV_COMFY_MODELS, raising=False)
    yield
    os.environ.pop(cli.ENV_CKPT_DIR, None)
    os.environ.pop(cli.ENV_COMFY_MODELS, None)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (symlinks not followed) with a hash of its content."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and (p.name.startswith(".") or "partial" in p.name))


def deny_writes_under(monkeypatch, where: Path, code: int) -> None:
    """Make creating files and folders under ``where`` fail with ``code`` (a read-only mount, a full disk, missing
    permission, an immutable folder) — the suite may run as root, for whom chmod does not deny anything."""
    real_open, real_mkdir = os.open, pathlib.Path.mkdir
    where = str(where)

    def fake_open(path, flags, *args, **kwargs):
        if os.path.abspath(path).startswith(where) and flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(self, *args, **kwargs):
        if os.path.abspath(self).startswith(where) and not self.exists():
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(pathlib.Path, "mkdir", fake_mkdir)


class ModelLoaded(BaseException):
    """Raised if a case gets as far as loading a model: bad input must be refused before that."""


@pytest.mark.parametrize("argv, code, words, setup, deny", CASES)
def test_hostile_input(argv, code, words, setup, deny, tmp_path, weights, monkeypatch, capsys):
    from ovi_core.pipeline import _Part

    monkeypatch.chdir(tmp_path)
    if setup is not None:
        setup(tmp_path, weights)
    before, hidden_before = snapshot(tmp_path), leftovers(tmp_path)
    if deny is not None:
        deny_writes_under(monkeypatch, tmp_path / "deny", deny)
    monkeypatch.setattr(_Part, "get", lambda self: (_ for _ in ()).throw(ModelLoaded(self.label)))

    result = cli.main([a.replace(W, str(weights)) if isinstance(a, str) else a for a in argv])
    out, err = capsys.readouterr()

    assert result == code, f"exit {result}, expected {code}\nstdout: {out}\nstderr: {err}"
    text = out + err
    for word in words:
        assert word in text, f"{word!r} not in the message:\n{text}"
    assert "Traceback" not in text
    if code != 0:
        error_lines = [line for line in err.splitlines() if "error:" in line]
        assert len(error_lines) == 1, err  # one message, reported once
    assert leftovers(tmp_path) == hidden_before
    assert snapshot(tmp_path) == before  # nothing changed, nothing added
    assert not (tmp_path / "PWNED").exists()  # no pickled code ran


def test_the_table_is_large_enough():
    assert len(CASES) >= 110


# ---- outcomes that need a real run --------------------------------------------------------------------------------
def _kill_a_writer(folder: Path) -> Path:
    """A real process that starts writing an mp4 the way mux does and is killed with SIGKILL meanwhile."""
    code = ("import os, sys; from pathlib import Path; from ovi_core.outpaths import partial_path; "
            "p = partial_path(Path(sys.argv[1]) / 'clip.mp4'); p.write_bytes(b'half a clip'); print(p, flush=True); "
            "os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=_env(),
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL
    path = Path(proc.stdout.strip())
    assert path.exists() and path.name.startswith(".clip.")
    return path


def test_overwrite_replaces_the_file_and_the_run_removes_leftovers_of_killed_runs(tmp_path, monkeypatch, capsys):
    killed = _kill_a_writer(tmp_path)
    old_style = tmp_path / ".clip.0123abcd.partial.mp4"  # the naming of earlier versions
    old_style.write_bytes(b"older leftover")
    os.utime(old_style, (time.time() - 3600, time.time() - 3600))
    live = tmp_path / f".other.{os.getpid()}-00c0ffee{outpaths.PARTIAL_MARK}.mp4"  # a run still writing
    live.write_bytes(b"still being written")
    mine = tmp_path / "notes.partial.txt"  # not ours: kept
    mine.write_text("keep me")
    (tmp_path / "clip.mp4").write_bytes(b"old")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["generate", "-p", P, "--steps", "1", "--out", "clip.mp4", "--overwrite", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert probe_mp4(tmp_path / "clip.mp4").num_frames == 121
    assert out.count("wrote clip.mp4") == 1 and "wrote" not in err
    assert "(64x64, 1 step)" in err
    assert not killed.exists() and not old_style.exists()
    assert live.exists() and mine.read_text() == "keep me"
    assert leftovers(tmp_path) == sorted([live.name, mine.name])


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (cli.ENV_CKPT_DIR, cli.ENV_COMFY_MODELS)}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_two_runs_writing_the_same_out_leave_one_clip_and_say_so(tmp_path):
    out = tmp_path / "same.mp4"
    argv = [sys.executable, "-m", "ovi_core", "generate", "-p", P, "--steps", "1", "--out", str(out), "--no-progress"]
    procs = [subprocess.Popen(argv + ["--seed", str(s)], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] in (1, 2), results
    loser = next(err for code, _, err in results if code != 0)
    assert "appeared while this clip was being written" in loser or "exists already" in loser
    assert "Traceback" not in loser
    winner_seed = next(out_ for code, out_, _ in results if code == 0).split("seed ")[1].split(")")[0]
    assert winner_seed in ("1", "2") and probe_mp4(out).num_frames == 121
    assert leftovers(tmp_path) == [] and [p.name for p in tmp_path.iterdir()] == ["same.mp4"]


def test_sigint_stops_a_long_demo_run_within_2_s_and_leaves_no_file(tmp_path):
    out = tmp_path / "long.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "ovi_core", "generate", "-p", P, "--steps", "1000", "--out",
                             str(out), "--no-progress"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    err = bytearray()
    reader = threading.Thread(target=lambda: [err.extend(c) for c in iter(lambda: proc.stderr.read1(4096), b"")])
    reader.start()
    deadline = time.monotonic() + 120
    while b"Ovi sampling" not in err and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b"Ovi sampling" in err, err.decode(errors="replace")
    time.sleep(0.5)  # well inside the 1000 steps
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    stopped_after = time.monotonic() - sent
    reader.join(timeout=10)
    assert code == 130 and stopped_after < 2.0, (code, stopped_after, err.decode(errors="replace"))
    assert b"interrupted" in err and b"Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_the_installed_package_runs_from_another_folder(tmp_path):
    """pip installs ovi_core (not nodes/) with the ``ovi`` script; ``python -m ovi_core`` then answers from any folder.

    Installed with --target into a temporary folder, from a copy of the sources (no build files in the repository),
    so the test holds whether or not this environment has the editable install."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment (needed to build the package offline)")
    src, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "tests",
                                                            "benchmarks", "workflows", "*.mp4"))
    elsewhere.mkdir()
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    assert (site / "ovi_core" / "cli.py").is_file()
    assert not (site / "nodes").exists()  # would shadow ComfyUI's own `nodes` module
    # the conformance runner and its cases are test tooling beside the core, not part of what is installed
    assert not (site / "conformance").exists() and not (site / "ovi_core" / "conformance_cases").exists()
    env = {k: v for k, v in os.environ.items() if k not in (cli.ENV_CKPT_DIR, cli.ENV_COMFY_MODELS)}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([sys.executable, "-m", "ovi_core", "--help"], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "exit codes" in proc.stdout and "143" in proc.stdout
    script = site / "bin" / "ovi"
    proc = subprocess.run([str(script), "generate", "--crf", "99", "-p", "x"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "usage: ovi generate" in proc.stderr and "--crf" in proc.stderr
    assert "Traceback" not in proc.stderr
