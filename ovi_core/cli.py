"""Command line: ``python -m ovi_core generate`` (prompt -> mp4) and ``python -m ovi_core check-weights``.

With no weights configured (no --ckpt-dir / --comfy-models / file options, no OVI_CKPT_DIR / OVI_COMFY_MODELS in
the environment) ``generate`` runs the built-in demo model (untrained, tiny, no download) and says so.

Exit codes: 0 success; 1 generation failed (in a batch: at least one row failed); 2 bad arguments or inputs;
3 weight files missing or wrong; 130 interrupted (Ctrl-C / SIGINT); 143 terminated (SIGTERM).
An mp4 appears under its final name only when it is complete.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ovi_core.config import VARIANTS
from ovi_core.errors import OviError, OviInputError, OviInterrupted, WrongFileError

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WEIGHTS, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
ENV_CKPT_DIR, ENV_COMFY_MODELS = "OVI_CKPT_DIR", "OVI_COMFY_MODELS"
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
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

exit codes: 0 ok, 1 generation failed, 2 bad arguments, 3 weights missing or wrong, 130 interrupted
"""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that temporary files are cleaned up as for Ctrl-C."""


class _Signals:
    """Ctrl-C (SIGINT) and SIGTERM raise at once, and are also remembered: an exception raised while Python runs a
    finaliser is swallowed ("Exception ignored in ..."), so the pipeline also polls ``stop_requested`` between
    sampling steps and stops there if the first attempt was lost."""

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
    g.add_argument("--variant", choices=tuple(VARIANTS),
                   help="which Ovi model (default: the first found, in this order)")
    g.add_argument("--fp8", action="store_true", help="use model_fp8_e4m3fn.safetensors (720x720_5s only)")
    g.add_argument("--model", type=Path, help="the fused Ovi file (model.safetensors, ...)")
    g.add_argument("--text-encoder", type=Path, help="umT5-XXL: models_t5_umt5-xxl-enc-bf16.pth or umt5_xxl_fp16.safetensors")
    g.add_argument("--tokenizer", type=Path, help="the google/umt5-xxl folder (if the text encoder file has none)")
    g.add_argument("--video-vae", type=Path, help="Wan2.2_VAE.pth or wan2.2_vae.safetensors")
    g.add_argument("--audio-vae", type=Path, help="MMAudio v1-16.pth")
    g.add_argument("--vocoder", type=Path, help="MMAudio's BigVGAN best_netG.pt")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _tile(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[x,]\s*(\d+)\s*", text) or re.fullmatch(r"\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected HxW in latent pixels (e.g. 32x32), got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2)) if m.lastindex == 2 else h


def build_parser() -> argparse.ArgumentParser:
    from ovi_core.sampler import DEFAULT_AUDIO_NEGATIVE_PROMPT, DEFAULT_VIDEO_NEGATIVE_PROMPT, SOLVERS

    parser = argparse.ArgumentParser(prog="python -m ovi_core", description="Ovi audio+video generation, headless.")
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
    what.add_argument("--image", type=Path, help="first frame (image-to-video); the size then comes from the image")
    what.add_argument("--width", type=int, help="width in pixels (the model keeps its trained area; default square)")
    what.add_argument("--height", type=int, help="height in pixels")
    what.add_argument("--video-negative", default=DEFAULT_VIDEO_NEGATIVE_PROMPT,
                      help=f"video negative prompt (default: {DEFAULT_VIDEO_NEGATIVE_PROMPT!r})")
    what.add_argument("--audio-negative", default=DEFAULT_AUDIO_NEGATIVE_PROMPT,
                      help=f"audio negative prompt (default: {DEFAULT_AUDIO_NEGATIVE_PROMPT!r})")

    s = g.add_argument_group("sampling (defaults: Ovi's; the demo model uses 8 steps and SLG layer 1)")
    s.add_argument("--seed", type=int, help="random seed (default 103)")
    s.add_argument("--steps", type=int, help="sampling steps (default 50)")
    s.add_argument("--solver", choices=SOLVERS, help="default unipc")
    s.add_argument("--shift", type=float, help="flow time shift (default 5.0)")
    s.add_argument("--video-guidance", type=float, help="video guidance scale (default 4.0)")
    s.add_argument("--audio-guidance", type=float, help="audio guidance scale (default 3.0)")
    s.add_argument("--slg-layer", type=int, help="fused block skipped in the negative pass, 0 = off (default 11)")
    s.add_argument("--repeat", type=_positive_int, default=1, help="clips per prompt, with seeds seed, seed+1, ...")

    _add_weight_args(g)

    r = g.add_argument_group("runtime")
    r.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    r.add_argument("--dtype", choices=DTYPES, default="bf16", help="compute dtype of the fusion model and text "
                   "encoder (default bf16)")
    r.add_argument("--weight-dtype", choices=("auto", "bf16", "fp16", "fp32", "fp8_e4m3fn"), default="auto",
                   help="how the fusion weights are kept in memory (fp8_e4m3fn halves it; default auto)")
    r.add_argument("--vae-dtype", choices=DTYPES, default="fp32", help="decoders' dtype (default fp32)")
    r.add_argument("--vae-tile", type=_tile, help="decode the video in tiles of HxW latent pixels (less memory)")
    r.add_argument("--attention", choices=("sdpa", "flash_attn", "sage"), default="sdpa")
    r.add_argument("--threads", type=_positive_int, help="CPU threads for torch (default: torch's choice; the demo uses 1)")
    r.add_argument("--keep-loaded", action="store_true", help="keep every model in memory (more memory, faster batches)")

    o = g.add_argument_group("output")
    o.add_argument("-o", "--out", type=Path, help="the mp4 to write (one prompt); default: a name in --out-dir")
    o.add_argument("--out-dir", type=Path, default=Path("outputs"), help="folder for generated files (default outputs/)")
    o.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    o.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    c = sub.add_parser("check-weights", help="show which weight files would be used (or what is missing)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_weight_args(c)
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


def read_prompts_file(path: Path) -> list[tuple[str, str, Path | None]]:
    """(label, prompt, image) per row of a .txt (one prompt per line; blank and # lines skipped) or a .csv/.tsv
    with a text_prompt column and an optional image_path column (relative paths: from the current folder, the
    file's folder or its parent, as the reference's example_prompts/ use them)."""
    if not path.is_file():
        raise OviInputError(f"prompts file {path} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    rows: list[tuple[str, str, Path | None]] = []
    if path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "text_prompt" not in columns:
            raise OviInputError(f"{path.name} has no text_prompt column (columns: {', '.join(columns) or 'none'}); "
                                "the first line must name the columns, e.g. text_prompt,image_path")
        for n, raw in enumerate(reader, start=1):
            record = {(k or "").strip(): (v or "") for k, v in raw.items()}
            image = record.get("image_path", "").strip()
            rows.append((f"row {n}", record["text_prompt"].strip(), _resolve_image(image, path) if image else None))
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
    """(label, prompt, image) for every clip asked for; bad inputs raise OviInputError before any loading."""
    if args.prompts is not None:
        if args.image is not None:
            raise OviInputError("--image goes with --prompt; in a prompts file put the images in an image_path column")
        if args.out is not None:
            raise OviInputError("--out names one file; with --prompts use --out-dir")
        entries = read_prompts_file(args.prompts)
    else:
        if not args.prompt.strip():
            raise OviInputError("the prompt is empty")
        if args.image is not None and not args.image.is_file():
            raise OviInputError(f"image file {args.image} does not exist")
        entries = [("prompt", args.prompt, args.image)]
    if args.out is not None:
        if args.out.suffix.lower() != ".mp4":
            raise OviInputError(f"--out must name an .mp4 file, got {args.out}")
        if args.out.is_dir():
            raise OviInputError(f"--out {args.out} is a folder; give a file name ending in .mp4")
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
def _pipeline_kwargs(args) -> dict:
    import torch

    return dict(device=args.device, dtype=getattr(torch, DTYPES[args.dtype]),
                vae_dtype=getattr(torch, DTYPES[args.vae_dtype]), weight_dtype=args.weight_dtype,
                attention=args.attention, keep_loaded=args.keep_loaded, vae_tile=args.vae_tile,
                num_threads=args.threads)


def weight_paths_from_args(args):
    """The OviWeightPaths the options (and environment) select, or None for the demo model."""
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
    if ckpt is not None:
        found = find_in_reference_folder(ckpt, args.variant, args.fp8, skip=skip)
    elif comfy is not None:
        found = find_in_comfy_models(comfy, args.variant, args.fp8, skip=skip)
    else:
        absent = [p for p in ("fusion", "text_encoder", "video_vae", "audio_vae", "vocoder") if p not in files]
        if absent:
            opts = {v: k.replace("_", "-") for k, v in FILE_OPTIONS.items()}
            raise MissingWeightsError("Ovi weights not given: " + "; ".join(
                f"{LABELS[p]} (--{opts[p]}): get it from {WHERE_TO_GET[p]}" for p in absent)
                + " — or point --ckpt-dir / --comfy-models at a folder holding them")
        found = OviWeightPaths(fusion=files["fusion"], text_encoder=files["text_encoder"], video_vae=files["video_vae"],
                               audio_vae=files["audio_vae"], vocoder=files["vocoder"],
                               variant=args.variant or "720x720_5s")
    paths = found.with_overrides(**files)
    check_paths(paths)
    return paths


def make_pipeline(args):
    """The pipeline the options select (the demo model when no weights are configured)."""
    from ovi_core.pipeline import OviPipeline

    paths = weight_paths_from_args(args)
    if paths is None:
        return OviPipeline.demo(device=args.device or "cpu", keep_loaded=args.keep_loaded, num_threads=args.threads)
    # the variant: as asked; else told by the fused file when it was named explicitly; else the one found
    variant = args.variant or (None if args.model is not None else paths.variant)
    return OviPipeline.from_paths(paths.fusion, paths.text_encoder, paths.video_vae, paths.audio_vae, paths.vocoder,
                                  paths.tokenizer, variant=variant, **_pipeline_kwargs(args))


# ---- commands --------------------------------------------------------------------------------------------------------
def cmd_generate(args) -> int:
    from ovi_core.demo import DEMO_NOTICE
    from ovi_core.pipeline import GenerationRequest
    from ovi_core.sampler import check_settings

    entries = read_entries(args)
    pipe = make_pipeline(args)
    if pipe.is_demo:
        _eprint(DEMO_NOTICE)
    else:
        logger.info("%s", pipe.description)
    base = pipe.settings(steps=args.steps, solver=args.solver, shift=args.shift, video_guidance=args.video_guidance,
                         audio_guidance=args.audio_guidance, slg_layer=args.slg_layer, seed=args.seed)
    check_settings(base.solver, base.steps, base.shift, base.video_guidance, base.audio_guidance, base.slg_layer,
                   base.seed + args.repeat - 1, num_layers=pipe.num_layers)
    jobs = make_jobs(entries, args, base.seed)
    requests = [GenerationRequest(job.prompt, job.image, args.height, args.width, replace(base, seed=job.seed),
                                  args.video_negative, args.audio_negative) for job in jobs]
    for job in jobs:
        job.out.parent.mkdir(parents=True, exist_ok=True)

    bars = ProgressBars(enabled=not args.no_progress)
    written: list[Path] = []
    start = time.perf_counter()

    def save(index: int, result) -> None:
        from ovi_core.pipeline import Progress

        job = jobs[index]
        info = result.save(job.out, crf=args.crf,
                           progress=lambda d, t: bars(Progress("write", d, t, index, len(jobs))))
        bars.close()
        written.append(job.out)
        demo = "  [DEMO MODEL: untrained, the content is noise]" if result.is_demo else ""
        print(f"wrote {job.out} ({info.num_frames} frames {info.width}x{info.height} at {info.fps:g} fps, "
              f"{info.video_duration:.3f} s; audio {result.audio_seconds:.3f} s at {result.sample_rate} Hz, written as "
              f"{info.audio_duration:.3f} s; seed {result.settings.seed}){demo}", flush=True)

    try:
        report = pipe.generate_batch(requests, on_result=save, progress=bars, should_interrupt=SIGNALS.stop_requested)
    except KeyboardInterrupt:
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
    paths = weight_paths_from_args(args)
    if paths is None:
        print("no weights configured: `generate` would run the built-in demo model (untrained). Use --ckpt-dir, "
              f"--comfy-models or the file options (or {ENV_CKPT_DIR} / {ENV_COMFY_MODELS}).")
        return EXIT_OK
    print(f"Ovi {paths.variant}:\n{paths.describe()}")
    return EXIT_OK


COMMANDS = {"generate": cmd_generate, "check-weights": cmd_check_weights}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, message already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    restore_logging = _setup_logging(args.quiet, args.verbose)

    SIGNALS.received = None
    SIGNALS.install()
    try:
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
