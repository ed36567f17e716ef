"""Command line: ``python -m ovi_core generate`` (prompt -> mp4) and ``python -m ovi_core check-weights``.

With no weights configured (no --ckpt-dir / --comfy-models / file options, no OVI_CKPT_DIR / OVI_COMFY_MODELS in
the environment) ``generate`` runs the built-in demo model (untrained, tiny, no download) and says so.

Exit codes: 0 success; 1 generation failed (in a batch: at least one row failed); 2 bad arguments or inputs;
3 weight files missing or wrong; 130 interrupted (Ctrl-C / SIGINT); 143 terminated (SIGTERM).

Every argument, input file and output path is checked before any model is loaded (``check_arguments``,
``read_entries``, ``prepare_outputs``): a run that would fail on its input fails in a second, not after sampling.
An mp4 appears under its final name only when it is complete, and never replaces a file without --overwrite.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ovi_core import interrupt, knobs
from ovi_core.errors import OviError, OviInputError, OviInterrupted, WrongFileError
from ovi_core.sizes import MAX_SIDE

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WEIGHTS, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
ENV_CKPT_DIR, ENV_COMFY_MODELS = "OVI_CKPT_DIR", "OVI_COMFY_MODELS"
FILE_OPTIONS = {  # option dest -> model_paths part
    "model": "fusion", "text_encoder": "text_encoder", "tokenizer": "tokenizer", "video_vae": "video_vae",
    "audio_vae": "audio_vae", "vocoder": "vocoder",
}

EPILOG = f"""\
weights (pick one; with none of them the built-in demo model runs):
  --ckpt-dir DIR        the reference's download folder: Ovi/model.safetensors, Wan2.2-TI2V-5B/Wan2.2_VAE.pth,
                        Wan2.2-TI2V-5B/models_t5_umt5-xxl-enc-bf16.pth + google/umt5-xxl/, MMAudio/ext_weights/
                        v1-16.pth + best_netG.pt  (or set {ENV_CKPT_DIR})
  --comfy-models DIR    ComfyUI's models folder: ovi/ or diffusion_models/, text_encoders/, vae/  (or {ENV_COMFY_MODELS})
  --model/--text-encoder/--video-vae/--audio-vae/--vocoder FILE   single files (override the folders)

exit codes:
  0    ok
  1    generation failed (in a batch: at least one clip failed; the others were written)
  2    bad arguments or inputs (nothing was loaded or written)
  3    weight files missing, unreadable or of the wrong kind
  130  interrupted (Ctrl-C, SIGINT)   143  terminated (SIGTERM); no partial file is left either way
"""
EXIT_CODES_EPILOG = EPILOG[EPILOG.index("exit codes:"):]

# Bounds of the numeric options (checked when the arguments are parsed).
MAX_CRF = 51  # x264: 0 lossless .. 51 worst
MAX_REPEAT = 1000
MAX_THREADS = 4 * (os.cpu_count() or 1)
VAE_TILE_RANGE = (24, 1024)  # latent pixels: the decoder's 16-pixel tile overlap + 8, .. 16384 pixels
MAX_PROMPTS_FILE_BYTES = 50 * 2**20
RUNTIME_DEFAULTS = {k.name: k.default for k in (knobs.DTYPE, knobs.WEIGHT_DTYPE, knobs.VAE_DTYPE, knobs.ATTENTION)}



class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that temporary files are cleaned up as for Ctrl-C."""


class _Signals:
    """Ctrl-C (SIGINT) and SIGTERM raise at once, and are also remembered: an exception raised while Python runs a
    finaliser is swallowed ("Exception ignored in ..."), so ``stop_requested`` is installed as an ovi_core.interrupt
    checker for the whole command, and every long loop of the core (blocks, steps, VAE chunks and tiles, encoder
    layers, muxed frames) stops at its next check if the first attempt was lost."""

    def __init__(self):
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the defaults
                pass

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _handle(self, signum, frame):
        self.received = signum
        raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def stop_requested(self) -> bool:
        return self.received is not None


SIGNALS = _Signals()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _eprint(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ---- arguments ---------------------------------------------------------------------------------------------------
def _add_weight_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("weights")
    g.add_argument("--demo", action="store_true", help="use the built-in untrained demo model (the default when no "
                   "weights are configured)")
    g.add_argument("--ckpt-dir", type=Path, help=f"reference download folder (Ovi/, Wan2.2-TI2V-5B/, MMAudio/); env {ENV_CKPT_DIR}")
    g.add_argument("--comfy-models", type=Path, help=f"ComfyUI models folder; env {ENV_COMFY_MODELS}")
    g.add_argument("--variant", choices=knobs.VARIANT_NAMES,
                   help="which Ovi model (default: the first found, in this order)")
    g.add_argument("--fp8", action="store_true", help="use model_fp8_e4m3fn.safetensors (720x720_5s only)")
    g.add_argument("--model", type=Path, help="the fused Ovi file (model.safetensors, ...)")
    g.add_argument("--text-encoder", type=Path, help="umT5-XXL: models_t5_umt5-xxl-enc-bf16.pth or umt5_xxl_fp16.safetensors")
    g.add_argument("--tokenizer", type=Path, help="the google/umt5-xxl folder (if the text encoder file has none)")
    g.add_argument("--video-vae", type=Path, help="Wan2.2_VAE.pth or wan2.2_vae.safetensors")
    g.add_argument("--audio-vae", type=Path, help="MMAudio v1-16.pth")
    g.add_argument("--vocoder", type=Path, help="MMAudio's BigVGAN best_netG.pt")


def _int_in(lo: int, hi: int, what: str):
    """argparse type: a whole number in lo..hi, with a message saying the range and what the number means."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number ({what}), got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi} ({what}), got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def _knob_value(knob: knobs.Knob):
    """argparse type of a number knob: the text as the knob's kind, then the knob's own check (knobs.check: its range
    and its message), so a bad value stops the parse (exit 2) with the message the core gives."""
    kind = "whole number" if knob.kind is int else "number"

    def parse(text: str):
        try:
            value = knob.kind(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} ({knob.help.split(';')[0]}), got {text!r}") from None
        try:
            return knobs.check(knob, value)
        except OviInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = kind
    return parse


def add_knob(group, knob: knobs.Knob, note: str = "", **kw) -> None:
    """``--knob-name``: its choices or checked value (``_knob_value``), and the help with its default, from ``knob``
    (ovi_core.knobs); ``note`` adds what only the command line says. The value is left None when not given (the
    pipeline's defaults fill it)."""
    if knob.choices:
        kw["choices"] = knob.choices
    else:
        kw["type"] = _knob_value(knob)
    span = f", {knob.min}..{knob.max_text or knob.max}" if knob.kind is int and knob.max is not None else ""
    group.add_argument("--" + knob.name.replace("_", "-"),
                       help=f"{knob.help}{span}{'; ' + note if note else ''} (default {knob.default})", **kw)


def _tile(text: str) -> tuple[int, int]:
    lo, hi = VAE_TILE_RANGE
    m = re.fullmatch(r"\s*(\d+)\s*[x,]\s*(\d+)\s*", text) or re.fullmatch(r"\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected HxW in latent pixels (e.g. 32x32; 1 latent pixel = 16 picture "
                                         f"pixels), got {text!r}")
    h = int(m.group(1))
    tile = (h, int(m.group(2)) if m.lastindex == 2 else h)
    if not all(lo <= t <= hi for t in tile):
        raise argparse.ArgumentTypeError(f"each side must be between {lo} and {hi} latent pixels (the tiles overlap by "
                                         f"16 latent pixels; 1 latent pixel = 16 picture pixels), got {text!r}")
    return tile


_tile.__name__ = "tile size"


def build_parser(prog: str = "python -m ovi_core") -> argparse.ArgumentParser:
    from ovi_core.demo import DEMO_SETTINGS

    parser = argparse.ArgumentParser(prog=prog, description="Ovi audio+video generation, headless.",
                                     epilog=EXIT_CODES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    g = sub.add_parser("generate", help="prompt (and optional first frame) -> mp4 with sound",
                       description="Generate a clip with sound from a prompt (or a batch from a prompts file).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = g.add_argument_group("what to generate")
    src = what.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", help="the prompt: speech in <S>...<E>, sound in <AUDCAP>...<ENDAUDCAP> "
                     "(720x720_5s) or a final 'Audio: ...' (960 models); the wrong spelling is rewritten")
    src.add_argument("--prompts", type=Path, help="batch: a .txt file (one prompt per line) or a .csv/.tsv with a "
                     "text_prompt column and an optional image_path column (as the reference's example_prompts/)")
    what.add_argument("--image", type=Path, help="first frame (image-to-video). Alone, the clip takes the image's "
                      "aspect ratio at the model's area (the original's size, multiples of 32); with --width/--height "
                      "the image is centre-cropped to that aspect ratio (nothing is stretched) and resized, bicubic "
                      "(ovi_core.media)")
    what.add_argument("--width", type=_int_in(1, MAX_SIDE, "pixels"), help="width in pixels, 1.."
                      f"{MAX_SIDE}: with --height it sets the aspect ratio; the model keeps its trained area "
                      "(default square, or the --image's aspect ratio)")
    what.add_argument("--height", type=_int_in(1, MAX_SIDE, "pixels"), help=f"height in pixels, 1..{MAX_SIDE}")
    for knob in (knobs.VIDEO_NEGATIVE, knobs.AUDIO_NEGATIVE):
        what.add_argument("--" + knob.name.replace("_", "-"), default=knob.default,
                          help=f"{knob.name.replace('_', ' ')} prompt: {knob.help} (default: {knob.default!r})")

    s = g.add_argument_group(f"sampling (defaults: Ovi's; the demo model uses {DEMO_SETTINGS.steps} steps and SLG "
                             f"layer {DEMO_SETTINGS.slg_layer})")
    for knob in knobs.SAMPLING.values():
        add_knob(s, knob, "Speed vs quality: docs/speed.md" if knob is knobs.CACHE_THRESHOLD else "")
    s.add_argument("--repeat", type=_int_in(1, MAX_REPEAT, "clips per prompt"), default=1,
                   help=f"clips per prompt (1..{MAX_REPEAT}), with seeds seed, seed+1, ...")

    _add_weight_args(g)

    r = g.add_argument_group("runtime")
    r.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available, else cpu)")
    add_knob(r, knobs.DTYPE, "fp16 is refused on the CPU, where PyTorch's float16 kernels are slow or missing")
    add_knob(r, knobs.WEIGHT_DTYPE)
    add_knob(r, knobs.VAE_DTYPE, "fp16 refused on the CPU")
    r.add_argument("--vae-tile", type=_tile, help="decode the video in tiles of HxW latent pixels, each "
                   f"{VAE_TILE_RANGE[0]}..{VAE_TILE_RANGE[1]} (less memory)")
    add_knob(r, knobs.ATTENTION)
    r.add_argument("--threads", type=_int_in(1, MAX_THREADS, f"CPU threads, at most 4x the {os.cpu_count()} cores"),
                   help="CPU threads for torch (default: torch's choice; the demo uses 1)")
    r.add_argument("--keep-loaded", action="store_true", help="keep every model in memory (more memory, faster batches)")
    r.add_argument("--compile", action="store_true", help="torch.compile the fusion model (the first step compiles, "
                   "minutes at full size; needs a C++ compiler on the CPU)")
    r.add_argument("--sp-size", type=_int_in(1, 1024, "sequence-parallel ranks"),
                   help="sequence parallel: split each clip's tokens over this many processes, launched with "
                        "`torchrun --nproc-per-node N -m ovi_core generate ...` (default: torchrun's world size; "
                        "must equal it; Ovi's 24 heads allow 2, 3, 4, 6, 8, 12 or 24)")

    o = g.add_argument_group("output")
    o.add_argument("-o", "--out", type=Path, help="the mp4 to write (one prompt); default: a name in --out-dir")
    o.add_argument("--out-dir", type=Path, default=Path("outputs"), help="folder for generated files (default outputs/)")
    o.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse, before "
                   "anything is loaded)")
    o.add_argument("--crf", type=_int_in(0, MAX_CRF, "H.264 quality: 0 lossless .. 51 worst"), default=18,
                   help=f"H.264 quality, 0..{MAX_CRF}, lower is better (default 18)")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    o.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    c = sub.add_parser("check-weights", help="show which weight files would be used and whether each is usable",
                       description="Find the weight files and check their contents (headers, keys, shapes, dtypes; "
                       "pickles are never executed). Exit 3 when a needed file is missing or unusable.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_weight_args(c)
    c.add_argument("--quick", action="store_true", help="check headers, keys, shapes and dtypes only; skip reading "
                   "every value of the fused model for NaN/Inf (which reads the whole file)")
    c.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    c.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    return parser


# ---- logging and progress ------------------------------------------------------------------------------------------
class _Handler(logging.Handler):
    """Log lines on stderr, written through tqdm when bars are active so they do not break them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.levelno >= logging.WARNING:
                msg = f"{record.levelname.lower()}: {msg}"
            try:
                from tqdm import tqdm

                tqdm.write(msg, file=sys.stderr)
            except ImportError:
                _eprint(msg)
        except Exception:  # never let logging break a run
            self.handleError(record)


def _setup_logging(quiet: bool, verbose: bool):
    """Route ovi_core's log to stderr; returns a function that restores the previous setup."""
    handler = _Handler()
    pkg = logging.getLogger("ovi_core")
    before = (pkg.level, pkg.propagate)
    pkg.addHandler(handler)
    pkg.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    pkg.propagate = False

    def restore():
        pkg.removeHandler(handler)
        pkg.setLevel(before[0])
        pkg.propagate = before[1]

    return restore


class ProgressBars:
    """Progress callback for the pipeline: one bar per clip and stage (sampling, decoding, writing) on stderr."""

    LABELS = {"sample": "sampling", "decode": "decoding", "write": "writing mp4"}

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.key = None

    def __call__(self, p) -> None:
        if not self.enabled or p.stage not in self.LABELS:
            return
        key = (p.stage, p.row)
        if key != self.key:
            self.close()
            try:
                from tqdm import tqdm
            except ImportError:
                self.enabled = False
                return
            where = f"[{p.row + 1}/{p.rows}] " if p.rows > 1 else ""
            unit = {"sample": "step", "decode": "frame", "write": "frame"}[p.stage]
            self.bar = tqdm(total=p.total, desc=f"{where}{self.LABELS[p.stage]}", unit=unit, file=sys.stderr,
                            leave=False, dynamic_ncols=True)
            self.key = key
        self.bar.update(p.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None


# ---- prompts -------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    label: str  # "row 3" / "prompt"
    prompt: str
    image: Path | None
    seed: int
    out: Path


def check_text(text: str, what: str) -> str:
    """``text`` if it is valid UTF-8 text without NUL; else OviInputError naming the byte and its offset.

    Command-line arguments that are not valid UTF-8 reach Python as lone surrogates (PEP 383); their bytes are
    recovered to say where the bad one is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(text)
        try:
            raw.decode("utf-8")
            offset = 0
        except UnicodeDecodeError as exc:
            offset = exc.start
        raise OviInputError(f"{what} is not valid UTF-8 text: byte 0x{raw[offset]:02x} at byte offset {offset} cannot "
                            "be decoded; write the text in UTF-8 (set your terminal or editor to UTF-8)") from None
    if "\x00" in text:
        raise OviInputError(f"{what} contains a NUL character (offset {text.index(chr(0))}); remove it")
    return text


def _decode_file(path: Path, what: str) -> str:
    """The text of a UTF-8 file (BOM allowed); OviInputError naming the file, line and byte offset otherwise."""
    try:
        if path.is_dir():
            raise OviInputError(f"{what} {path} is a folder; give a .txt, .csv or .tsv file")
        if not path.is_file():
            raise OviInputError(f"{what} {path} does not exist")
        size = path.stat().st_size
        if size > MAX_PROMPTS_FILE_BYTES:
            raise OviInputError(f"{what} {path} is {size:,} bytes; a prompts file holds text, at most "
                                f"{MAX_PROMPTS_FILE_BYTES:,} bytes — is it the right file?")
        data = path.read_bytes()
    except OSError as exc:
        raise OviInputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise OviInputError(f"{what} {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
                            f"(line {line}) cannot be decoded; save the file as UTF-8") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise OviInputError(f"{what} {path} contains a NUL byte on line {line}; it is not a text file")
    return text


def read_prompts_file(path: Path) -> list[tuple[str, str, Path | None]]:
    """(label, prompt, image) per row of a .txt (one prompt per line; blank and # lines skipped) or a .csv/.tsv
    with a text_prompt column and an optional image_path column (relative paths: from the current folder, the
    file's folder or its parent, as the reference's example_prompts/ use them).

    CSV/TSV syntax is read strictly (an unterminated or stray quote, a row with more fields than the header are
    errors with their line number); rows whose fields are all empty are skipped, as blank lines."""
    text = _decode_file(path, "prompts file")
    rows: list[tuple[str, str, Path | None]] = []
    if path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",",
                            strict=True)
        start = 1
        try:
            header = next(reader, None)
            columns = [c.strip() for c in (header or [])]
            if "text_prompt" not in columns:
                raise OviInputError(f"{path.name} has no text_prompt column (columns: {', '.join(columns) or 'none'}); "
                                    "the first line must name the columns, e.g. text_prompt,image_path")
            n = 0
            start = reader.line_num + 1
            for record in reader:
                where = f"line {start}" if reader.line_num == start else f"lines {start}-{reader.line_num}"
                start = reader.line_num + 1
                if not any(v.strip() for v in record):
                    continue  # a blank row
                n += 1
                if len(record) > len(columns):
                    raise OviInputError(f"{path.name} {where}: {len(record)} fields, but the header names "
                                        f"{len(columns)} ({', '.join(columns)}); put a prompt that contains "
                                        "commas in double quotes")
                fields = dict(zip(columns, [v.strip() for v in record] + [""] * (len(columns) - len(record))))
                image = fields.get("image_path", "")
                rows.append((f"row {n} ({where})", fields["text_prompt"], _resolve_image(image, path) if image else None))
        except csv.Error as exc:
            if "end of data" in str(exc):
                raise OviInputError(f"{path.name} line {start}: a quoted field starts there and its closing quote is "
                                    f"never found (the file ends on line {reader.line_num}); close the quote, and "
                                    "double any quote inside a quoted field (\"\")") from None
            raise OviInputError(f"{path.name} line {reader.line_num}: {exc} — check the quotes on that line (a field "
                                "that holds quotes or the separator must be quoted, with inner quotes doubled)") \
                from None
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                rows.append((f"line {n}", line.strip(), None))
    if not rows:
        raise OviInputError(f"{path} holds no prompts")
    return rows


def _resolve_image(value: str, prompts_file: Path) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    for base in (Path.cwd(), prompts_file.parent, prompts_file.parent.parent):
        if (base / p).is_file():
            return base / p
    return p  # reported as missing when the row is prepared


def _slug(prompt: str, n: int = 40) -> str:
    text = re.sub(r"<[^>]*>", " ", prompt)
    text = re.sub(r"[^\w\-]+", "_", text, flags=re.UNICODE).strip("_")
    return text[:n].rstrip("_") or "clip"


def read_entries(args) -> list[tuple[str, str, Path | None]]:
    """(label, prompt, image) for every clip asked for. Every prompt is checked (UTF-8, not empty) and every image
    read in full now; all problems are reported together (OviInputError), before any loading."""
    if args.prompts is not None:
        if args.image is not None:
            raise OviInputError("--image goes with --prompt; in a prompts file put the images in an image_path column")
        if args.out is not None:
            raise OviInputError("--out names one file; with --prompts use --out-dir")
        entries = read_prompts_file(args.prompts)
    else:
        entries = [("prompt", check_text(args.prompt, "the --prompt text"), args.image)]
    check_text(args.video_negative, "the --video-negative text")
    check_text(args.audio_negative, "the --audio-negative text")
    if args.out is not None:
        from ovi_core.outpaths import check_name_part

        check_text(str(args.out), "the --out path")
        check_name_part(args.out.name, "--out file name")
        if args.out.suffix.lower() != ".mp4":
            raise OviInputError(f"--out must name an .mp4 file, got {args.out}")  # a folder: prepare_outputs says so
    check_text(str(args.out_dir), "the --out-dir path")

    from ovi_core.images import read_image

    problems = []
    for label, prompt, image in entries:
        what = "the prompt" if label == "prompt" else f"{label}: the prompt"
        try:
            if not prompt.strip():
                raise OviInputError(f"{what} is empty")
            check_text(prompt, what)
            if image is not None:
                read_image(image)
        except OviInputError as exc:
            problems.append(str(exc) if label == "prompt" or str(exc).startswith(label) else f"{label}: {exc}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        where = f" in {args.prompts}" if args.prompts is not None else ""
        raise OviInputError(("; ".join(problems[:5]) + more) + (f" — fix{where} and run again; nothing was generated"
                                                              if len(entries) > 1 else ""))
    return entries


def make_jobs(entries, args, seed: int) -> list[Job]:
    """One job per entry and repetition (seeds seed, seed+1, ...), with its output file name."""
    jobs = []
    digits = len(str(len(entries)))
    for i, (label, prompt, image) in enumerate(entries):
        for k in range(args.repeat):
            if args.out is not None:
                out = args.out if args.repeat == 1 else args.out.with_name(f"{args.out.stem}_{seed + k}{args.out.suffix}")
            else:
                prefix = f"{i + 1:0{digits}d}_" if len(entries) > 1 else ""
                out = args.out_dir / f"{prefix}{_slug(prompt)}_{seed + k}.mp4"
            jobs.append(Job(label if args.repeat == 1 else f"{label} seed {seed + k}", prompt, image, seed + k, out))
    return jobs


# ---- weights ---------------------------------------------------------------------------------------------------------
def available_devices() -> list[str]:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(text: str | None):
    """The torch.device --device names, if it exists and is usable here; OviInputError naming what is available."""
    import torch

    if text is None:
        return None
    avail = ", ".join(available_devices())
    try:
        device = torch.device(text.strip())
    except (RuntimeError, ValueError, TypeError):
        raise OviInputError(f"--device {text!r} is not a device name; use one of: {avail}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OviInputError(f"--device {text}: CUDA is not available here (no NVIDIA GPU, driver or CUDA build of "
                                f"PyTorch); available: {avail}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OviInputError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                                f"available: {avail}")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise OviInputError(f"--device {text}: Apple's MPS is not available here; available: {avail}")
    elif device.type != "cpu":
        raise OviInputError(f"--device {text}: Ovi runs on cpu, cuda or mps, not {device.type}; available: {avail}")
    return device


def check_dtypes(args, device) -> None:
    """Dtypes that the device cannot run well are refused (OviInputError) before anything is loaded.

    fp16 compute on the CPU: PyTorch's CPU float16 kernels are slow or missing for some operations, so a run would
    crawl or fail halfway; bf16 (default) and fp32 work. bf16 on a CUDA GPU without bf16 support: fp16 works there.
    fp8 weights on MPS: Apple's backend has no float8."""
    import torch

    kind = device.type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    for option, value in (("--dtype", args.dtype), ("--vae-dtype", args.vae_dtype)):
        if kind == "cpu" and value == "fp16":
            raise OviInputError(f"{option} fp16 on the CPU: PyTorch's CPU float16 kernels are slow or missing for some "
                                "operations; use bf16 or fp32 on the CPU (fp16 is for GPUs)")
        if kind == "cuda" and value == "bf16" and not torch.cuda.is_bf16_supported():
            raise OviInputError(f"{option} bf16: this GPU has no bfloat16 support; use fp16 (or fp32)")
    if kind == "mps" and knobs.is_fp8(knobs.WEIGHT_DTYPES[args.weight_dtype]):
        raise OviInputError(f"--weight-dtype {args.weight_dtype}: Apple's MPS backend has no float8; use bf16 or fp16")


def _pipeline_kwargs(args) -> dict:
    return dict(device=args.device, dtype=knobs.COMPUTE_DTYPES[args.dtype],
                vae_dtype=knobs.COMPUTE_DTYPES[args.vae_dtype], weight_dtype=args.weight_dtype,
                attention=args.attention, keep_loaded=args.keep_loaded, vae_tile=args.vae_tile,
                num_threads=args.threads)


def weight_paths_from_args(args):
    """The OviWeightPaths the options (and environment) select, or None for the demo model. Its variant is decided
    here, once: --variant; else the one the fused file was found as; else (the file was named) None: the file tells."""
    from ovi_core.config import get_variant
    from ovi_core.model_paths import (
        LABELS,
        WHERE_TO_GET,
        MissingWeightsError,
        OviWeightPaths,
        check_paths,
        find_in_comfy_models,
        find_in_reference_folder,
    )

    ckpt = args.ckpt_dir or (Path(os.environ[ENV_CKPT_DIR]) if os.environ.get(ENV_CKPT_DIR) else None)
    comfy = args.comfy_models or (Path(os.environ[ENV_COMFY_MODELS]) if os.environ.get(ENV_COMFY_MODELS) else None)
    files = {part: getattr(args, dest) for dest, part in FILE_OPTIONS.items() if getattr(args, dest) is not None}
    if args.demo:
        if args.ckpt_dir or args.comfy_models or files:
            raise OviInputError("--demo runs the built-in model; drop it to use the weights you named")
        return None
    if args.ckpt_dir and args.comfy_models:
        raise OviInputError("give --ckpt-dir or --comfy-models, not both")
    if args.ckpt_dir:
        comfy = None
    elif args.comfy_models:
        ckpt = None
    elif ckpt and comfy:
        raise OviInputError(f"both {ENV_CKPT_DIR} and {ENV_COMFY_MODELS} are set; unset one or pass an option")
    if ckpt is None and comfy is None and not files:
        return None
    skip = frozenset(files)
    variant = get_variant(args.variant) if args.variant else None
    if ckpt is not None:
        found = find_in_reference_folder(ckpt, variant, args.fp8, skip=skip)
    elif comfy is not None:
        found = find_in_comfy_models(comfy, variant, args.fp8, skip=skip)
    else:
        absent = [p for p in ("fusion", "text_encoder", "video_vae", "audio_vae", "vocoder") if p not in files]
        if absent:
            opts = {v: k.replace("_", "-") for k, v in FILE_OPTIONS.items()}
            raise MissingWeightsError("Ovi weights not given: " + "; ".join(
                f"{LABELS[p]} (--{opts[p]}): get it from {WHERE_TO_GET[p]}" for p in absent)
                + " — or point --ckpt-dir / --comfy-models at a folder holding them")
        found = OviWeightPaths(fusion=files["fusion"], text_encoder=files["text_encoder"], video_vae=files["video_vae"],
                               audio_vae=files["audio_vae"], vocoder=files["vocoder"], variant=variant)
    paths = found.with_overrides(**files)
    check_paths(paths)
    return paths


def demo_ignored_options(args) -> list[str]:
    """The given options the demo model cannot honour, each with why (see ovi_core.demo.DEMO_IGNORES)."""
    from ovi_core.demo import DEMO_IGNORES

    given = []
    for dest, why in DEMO_IGNORES.items():
        value = getattr(args, dest, None)
        if value is None or value is False:
            continue
        shown = "" if value is True else f" {value}"
        given.append(f"--{dest.replace('_', '-')}{shown} ({why})")
    return given


def setup_sequence_parallel(args):
    """Under torchrun (RANK and WORLD_SIZE set) with more than one process: initialise the default process group
    (gloo on the CPU, nccl on CUDA; each rank on cuda:LOCAL_RANK) and return it; else None. --sp-size must equal the
    world size. Ranks other than 0 log warnings only and draw no progress bars."""
    from ovi_core.parallel import init_from_torchrun, launched_by_torchrun

    world = int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else 1
    sp = args.sp_size or world
    if sp != world:
        how = (f"launch with `torchrun --nproc-per-node {sp} -m ovi_core generate ...`" if world == 1 else
               f"this run has {world} processes; every process takes part, so drop --sp-size or launch {sp}")
        raise OviInputError(f"--sp-size {sp}: sequence parallel splits a clip over the processes torchrun starts; {how}")
    if world == 1:
        return None
    import torch
    import torch.distributed as dist

    kind = args.device.type if args.device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    rank, _, local_rank = init_from_torchrun(kind)
    if kind == "cuda":
        args.device = torch.device("cuda", local_rank)
        torch.cuda.set_device(args.device)
    elif args.device is None:
        args.device = torch.device(kind)
    if rank != 0:
        args.no_progress = True
        logging.getLogger("ovi_core").setLevel(logging.WARNING)
    logger.info("sequence parallel over %d processes (%s)", world, dist.get_backend())
    return dist.group.WORLD


def make_pipeline(args, paths, process_group=None):
    """The pipeline the options select (the demo model when ``paths`` is None). Nothing is loaded here."""
    from ovi_core.pipeline import OviPipeline

    if paths is None:
        return OviPipeline.demo(device=args.device or "cpu", keep_loaded=args.keep_loaded, num_threads=args.threads,
                                vae_tile=args.vae_tile, process_group=process_group)
    return OviPipeline.from_weight_paths(paths, process_group=process_group, **_pipeline_kwargs(args))


def check_size(args, pipe) -> None:
    """--width/--height against the model: the clip the request turns into must stay within the area cap."""
    from ovi_core.sizes import check_clip_size, snap_to_area

    if args.width is None and args.height is None:
        return
    side = math.isqrt(pipe.variant.target_area)
    width, height = args.width or side, args.height or side
    h, w = snap_to_area(height, width, pipe.variant.target_area)
    try:
        check_clip_size(w, h, pipe.variant.target_area, f"the {pipe.variant.name} model")
    except OviInputError as exc:
        raise OviInputError(f"--width {width} --height {height} (aspect ratio {width / height:.3g}) becomes a "
                            f"{w}x{h} clip at the model's area: {exc}; use a less extreme aspect ratio") from None


def prepare_outputs(jobs, overwrite: bool) -> None:
    """Every output path checked (name, folder writable, no existing file unless overwrite) before any loading."""
    from ovi_core.outpaths import prepare_output

    seen: dict[Path, str] = {}
    for job in jobs:
        key = Path(os.path.abspath(job.out))
        if key in seen:
            raise OviInputError(f"{job.label} and {seen[key]} would both write {job.out}; give them different names")
        seen[key] = job.label
        prepare_output(job.out, overwrite=overwrite)


# ---- commands --------------------------------------------------------------------------------------------------------
def cmd_generate(args) -> int:
    # 1. everything the user gave, before anything is loaded: arguments, device, prompts, images, weights' presence
    args.device = check_device(args.device)
    entries = read_entries(args)
    paths = weight_paths_from_args(args)
    ignored = demo_ignored_options(args) if paths is None else []
    for dest, default in RUNTIME_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    if paths is not None:
        from ovi_core.model_paths import check_weight_files

        check_dtypes(args, args.device)
        problems = [problem for _, _, problem, _ in check_weight_files(paths, full=False) if problem]
        if problems:  # headers and keys only: a wrong or truncated file fails now, not after loading the others
            raise WrongFileError(" | ".join(problems) + " — `check-weights` lists every file")
    group = setup_sequence_parallel(args)
    try:
        return _generate(args, entries, paths, ignored, group)
    finally:
        if group is not None:
            import torch.distributed as dist

            dist.destroy_process_group()


def _generate(args, entries, paths, ignored, group) -> int:
    from ovi_core.demo import demo_notice
    from ovi_core.pipeline import GenerationRequest

    pipe = make_pipeline(args, paths, group)
    if args.compile:  # the fusion model is compiled as it loads
        from ovi_core.compile import compile_fusion

        fusion = pipe.parts["fusion"]
        fusion._load = (lambda load: lambda: compile_fusion(load()))(fusion._load)
    base = pipe.settings(steps=args.steps, solver=args.solver, shift=args.shift, video_guidance=args.video_guidance,
                         audio_guidance=args.audio_guidance, slg_layer=args.slg_layer, seed=args.seed,
                         sync_guidance=args.sync_guidance, sync_cut=args.sync_cut,
                         cache_threshold=args.cache_threshold)
    # base is valid once built (and every knob was checked as it was parsed); new here: the model's depth bounds
    # slg_layer, and --repeat's last seed must still be a seed
    knobs.check(knobs.SLG_LAYER, base.slg_layer, num_layers=pipe.num_layers)
    knobs.check(knobs.SEED, base.seed + args.repeat - 1)
    check_size(args, pipe)
    jobs = make_jobs(entries, args, base.seed)
    prepare_outputs(jobs, args.overwrite)
    requests = [GenerationRequest(job.prompt, job.image, args.height, args.width, replace(base, seed=job.seed),
                                  args.video_negative, args.audio_negative) for job in jobs]

    # 2. what will run
    if pipe.is_demo:
        _eprint(demo_notice(base.steps))
        if ignored:
            _eprint(f"note: the demo model ignores {'; '.join(ignored)}")
    else:
        from ovi_core.attention import resolve_backend

        logger.info("%s", pipe.description)
        resolve_backend(args.attention, pipe.device)  # a missing flash-attn / sage is named once, with the fallback

    bars = ProgressBars(enabled=not args.no_progress)
    written: list[Path] = []
    start = time.perf_counter()

    def save(index: int, result) -> None:
        from ovi_core.outpaths import OutputPathError
        from ovi_core.pipeline import Progress

        job = jobs[index]
        try:
            info = result.save(job.out, crf=args.crf, overwrite=args.overwrite,
                               progress=lambda d, t: bars(Progress("write", d, t, index, len(jobs))))
        except OutputPathError as exc:  # the file appeared meanwhile (another run): not a usage error
            raise OviError(str(exc)) from None
        bars.close()
        written.append(job.out)
        demo = "  [DEMO MODEL: untrained, the content is noise]" if result.is_demo else ""
        print(f"wrote {job.out} ({info.num_frames} frames {info.width}x{info.height} at {info.fps:g} fps, "
              f"{info.video_duration:.3f} s; audio {result.audio_seconds:.3f} s at {result.sample_rate} Hz, written as "
              f"{info.audio_duration:.3f} s; seed {result.settings.seed}){demo}", flush=True)

    try:
        report = pipe.generate_batch(requests, on_result=save, progress=bars, should_interrupt=SIGNALS.stop_requested)
    except (KeyboardInterrupt, OviInterrupted):
        bars.close()
        if written:
            _eprint(f"finished clips kept: {', '.join(str(p) for p in written)}")
        raise
    finally:
        bars.close()
    elapsed = time.perf_counter() - start
    if len(jobs) == 1 and report.errors:
        raise report.errors[0]
    for index, exc in sorted(report.errors.items()):
        _eprint(f"error: {jobs[index].label} failed: {_one_line(exc)}")
    done = len(jobs) - len(report.errors)
    if len(jobs) > 1:
        summary = f"{done} of {len(jobs)} clips written in {elapsed:.1f} s"
        if report.errors:
            summary += f"; failed: {', '.join(jobs[i].label for i in sorted(report.errors))}"
        print(summary, flush=True)
    else:
        logger.info("done in %.1f s", elapsed)
    if pipe.is_demo:
        _eprint("note: made with the built-in DEMO model (untrained): the pictures and sound are noise.")
    return EXIT_OK if not report.errors else EXIT_FAILED


def cmd_check_weights(args) -> int:
    from ovi_core.model_paths import LABELS, check_weight_files

    paths = weight_paths_from_args(args)
    if paths is None:
        print("no weights configured: `generate` would run the built-in demo model (untrained). Use --ckpt-dir, "
              f"--comfy-models or the file options (or {ENV_CKPT_DIR} / {ENV_COMFY_MODELS}).")
        return EXIT_OK
    print(f"Ovi {paths.variant.name if paths.variant else '(variant read from the fused file)'}:")
    bad = 0
    if not args.quick:
        print("reading every tensor of the fused model for NaN/Inf (skip with --quick) ...", flush=True)
    for part, path, problem, about in check_weight_files(paths, scan_values=not args.quick):
        status = "ok  " if problem is None else "BAD "
        print(f"  {status}{LABELS[part]:<26} {path}")
        print(f"        {about if problem is None else problem}")
        bad += problem is not None
    if bad:
        _eprint(f"error: {bad} of the weight files above cannot be used; replace them (see each line) and run "
                "check-weights again")
        return EXIT_WEIGHTS
    print("all weight files are usable")
    return EXIT_OK


COMMANDS = {"generate": cmd_generate, "check-weights": cmd_check_weights}


def main(argv: list[str] | None = None, prog: str = "python -m ovi_core") -> int:
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, message already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    restore_logging = _setup_logging(args.quiet, args.verbose)

    SIGNALS.received = None
    SIGNALS.install()
    try:
        with interrupt.checking(SIGNALS.stop_requested):  # every core loop's interrupt.check() sees the signal
            return COMMANDS[args.command](args)
    except (KeyboardInterrupt, OviInterrupted) as exc:
        if isinstance(exc, _Terminated) or SIGNALS.received == signal.SIGTERM:
            _eprint("terminated: no partial file was left behind")
            return EXIT_TERMINATED
        _eprint("interrupted: no partial file was left behind")
        return EXIT_INTERRUPTED
    except OviInputError as exc:
        _eprint(f"error: {_one_line(exc)}")
        return EXIT_USAGE
    except WrongFileError as exc:
        _eprint(f"error: {_one_line(exc)}")
        return EXIT_WEIGHTS
    except OviError as exc:
        _eprint(f"error: {_one_line(exc)}")
        return EXIT_FAILED
    except MemoryError:
        _eprint("error: out of memory; try --weight-dtype fp8_e4m3fn, --vae-tile 32x32, or a smaller model")
        return EXIT_FAILED
    except Exception as exc:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            _eprint(f"error: out of GPU memory ({_one_line(exc)[:200]}); try --weight-dtype fp8_e4m3fn, "
                    "--vae-tile 32x32 or --device cpu")
            return EXIT_FAILED
        raise
    finally:
        SIGNALS.restore()
        restore_logging()


def console_main() -> None:
    """The ``ovi`` console script and ``python -m ovi_core``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    code = main(prog="ovi" if name in ("ovi", "ovi.exe") else "python -m ovi_core")
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        # Stopped on request: every file is closed and cleaned up already. End now instead of waiting for the
        # interpreter to finalise torch's and transformers' modules, which took 1-2 s on a busy machine.
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)
