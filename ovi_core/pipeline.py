"""Headless Ovi: prompt (and optional first frame) in, frames + audio (and an mp4) out.

    pipe = OviPipeline.from_folder("ckpts")                    # the reference's download folder
    pipe = OviPipeline.from_comfy_models("ComfyUI/models")     # ComfyUI's model folders
    pipe = OviPipeline.from_paths(fusion=..., text_encoder=..., video_vae=..., audio_vae=..., vocoder=...)
    pipe = OviPipeline.demo()                                  # built-in tiny untrained model, no download
    result = pipe.generate("A cat plays the piano. <AUDCAP>Piano music.<ENDAUDCAP>", seed=7)
    result.save("cat.mp4")                                     # H.264 + AAC, written atomically

One generation runs in four stages, and each model is loaded only for its stage and freed after it, so the peak
memory is the largest model, not the sum (the text encoder is gone before the fusion model is loaded):
  1. text encoder: the prompt (rewritten to the model's caption spelling) and the two negative prompts;
  2. video VAE encoder (image-to-video only): the first frame (ovi_core.media.first_frame: the reference's resize,
     after a centre crop when a size with another aspect ratio is asked for) to a latent;
  3. fusion model: the joint audio+video sampler;
  4. video VAE decoder and audio decoder (MMAudio VAE + BigVGAN): frames [T, H, W, 3] and audio [1, N].
``generate_batch`` runs many requests through the same four stages, so each model is loaded once per batch; a
failing request is reported and the others continue. ``keep_loaded=True`` keeps every model once loaded
(interactive use with enough memory).

Sequence parallel (several GPUs on one clip, ovi_core.parallel): every rank of a torch.distributed process group
builds the same pipeline with ``process_group=`` the group and calls generate with the same arguments.
Stages 1 and 2 (text encoder, image encoder) run on rank 0 only, which broadcasts the embeddings and first-frame
latents; in stage 3 the fusion model splits its token sequences over the group. Stage 4, the decoders, runs on
rank 0 only: rank 0 gets the results, the other ranks get None (and no on_result call).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ovi_core import knobs
from ovi_core.config import Variant, get_variant
from ovi_core.errors import OviError, OviInputError, OviInterrupted
from ovi_core.media import clip_to_images, first_frame
from ovi_core.sampler import (
    PromptEmbeddings,
    SamplingSettings,
    StepCallback,
    sample_joint,
)

logger = logging.getLogger(__name__)


# ---- requests, progress, results -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """Reported to the progress callback. stage: "text", "image", "sample", "decode"; row is 0-based."""

    stage: str
    done: int
    total: int
    row: int = 0
    rows: int = 1


ProgressCallback = Callable[[Progress], None]


@dataclass
class GenerationRequest:
    """One clip to generate. settings None = the pipeline's defaults; height/width None = the variant's area.

    image: the first frame (image-to-video): a file path, a PIL image, or an array/tensor [H, W, C] / [1, H, W, C]
    (uint8, uint16 or float 0..1). Without height/width the clip takes the image's aspect ratio at the model's area
    (the original's size); with them it is that clip, the image centre-cropped to its aspect ratio when it differs
    (ovi_core.media.first_frame)."""

    prompt: str
    image: Any = None
    height: int | None = None
    width: int | None = None
    settings: SamplingSettings | None = None
    video_negative_prompt: str = knobs.VIDEO_NEGATIVE.default
    audio_negative_prompt: str = knobs.AUDIO_NEGATIVE.default


@dataclass
class OviResult:
    """A generated clip: frames [T, H, W, 3] float32 in 0..1, audio [1, N] float32 in -1..1 (on the CPU)."""

    frames: torch.Tensor
    audio: torch.Tensor
    sample_rate: int
    fps: int
    prompt: str  # as given to the text encoder (caption spelling fixed for the model)
    settings: SamplingSettings
    variant: str
    is_demo: bool = False
    image_to_video: bool = False

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def video_seconds(self) -> float:
        return self.num_frames / self.fps

    @property
    def audio_seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate

    def metadata(self) -> dict[str, str]:
        s = self.settings
        about = (f"Ovi {self.variant}, seed {s.seed}, {s.solver} {s.steps} steps, shift {s.shift:g}, guidance video "
                 f"{s.video_guidance:g} / audio {s.audio_guidance:g}, SLG layer {s.slg_layer}")
        if self.is_demo:
            about = "DEMO MODEL (untrained random weights, the content is noise); " + about
        return {"comment": about, "description": self.prompt}

    def save(self, path: str | os.PathLike, **mux_options):
        """Write the clip as an mp4 (see ovi_core.mux.write_mp4: H.264 + AAC, audio padded to the video length,
        written to a temporary name and published when complete; an existing file is replaced only with
        ``overwrite=True``)."""
        from ovi_core.mux import write_mp4

        return write_mp4(path, self.frames, self.fps, self.audio, self.sample_rate, metadata=self.metadata(),
                         **mux_options)


# ---- lazily loaded parts -----------------------------------------------------------------------------------------
class _Part:
    """One model, loaded on first use and dropped by release() (unless kept)."""

    def __init__(self, label: str, load: Callable[[], Any], keep: bool = False):
        self.label, self._load, self.keep = label, load, keep
        self.obj = None

    def get(self):
        if self.obj is None:
            start = time.perf_counter()
            logger.info("loading the %s", self.label)
            self.obj = self._load()
            logger.info("loaded the %s in %.1f s", self.label, time.perf_counter() - start)
        return self.obj

    def release(self, force: bool = False) -> None:
        if self.obj is None or (self.keep and not force):
            return
        self.obj = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.debug("freed the %s", self.label)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---- the pipeline ------------------------------------------------------------------------------------------------
@dataclass
class _Row:
    index: int
    request: GenerationRequest
    settings: SamplingSettings | None = None
    prompt: str = ""
    video_shape: tuple = ()
    audio_shape: tuple = ()
    image: torch.Tensor | None = None
    text: PromptEmbeddings | None = None
    first_frame: torch.Tensor | None = None
    latents: tuple | None = None
    error: BaseException | None = None


class _Batch:
    """The requests of one run on their way through the stages: which are still alive, progress reports, and
    ``attempt`` — one request's step, whose error (in a batch) is recorded while the others go on."""

    def __init__(self, rows: list[_Row], progress: ProgressCallback | None, should_interrupt, stop_on_error: bool):
        self.rows, self.progress, self.should_interrupt, self.stop_on_error = rows, progress, should_interrupt, stop_on_error

    def attempt(self, row: _Row, what: str, fn: Callable, *args):
        """fn(*args) for one request; in a batch its error is recorded and the batch goes on."""
        if self.should_interrupt is not None and self.should_interrupt():
            raise OviInterrupted(f"stopped on request before {what} of request {row.index + 1}")
        try:
            return fn(*args)
        except (KeyboardInterrupt, OviInterrupted):
            raise
        except Exception as exc:
            if self.stop_on_error:
                raise
            row.error = exc
            logger.error("request %d of %d failed during %s: %s", row.index + 1, len(self.rows), what, exc)

    def live(self, need_image: bool = False) -> list[_Row]:
        return [r for r in self.rows if r.error is None and (r.image is not None or not need_image)]

    def report(self, stage: str, done: int, total: int, row: _Row) -> None:
        if self.progress is not None:
            self.progress(Progress(stage, done, total, row.index, len(self.rows)))

    def errors(self) -> dict[int, BaseException]:
        return {r.index: r.error for r in self.rows if r.error is not None}


@dataclass
class BatchReport:
    """generate_batch's outcome. results[i]: the clip (None when it failed, or when on_result took it);
    errors: request index -> the exception that stopped it."""

    results: list[OviResult | None] = field(default_factory=list)
    errors: dict[int, BaseException] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


class OviPipeline:
    """Text encoder + fusion model + sampler + decoders; build with a from_* constructor or demo()."""

    def __init__(self, variant: Variant, loaders: dict[str, Callable[[], Any]], *, num_layers: int,
                 device: torch.device, default_settings: SamplingSettings | None = None, is_demo: bool = False,
                 keep_loaded: bool = False, vae_tile: tuple[int, int] | None = None, description: str = "",
                 num_threads: int | None = None, process_group=None):
        labels = {"text_encoder": "text encoder", "fusion": "fusion model", "video_vae": "video VAE",
                  "audio_decoder": "audio decoder"}
        self.variant = variant
        self.num_layers = num_layers
        self.device = torch.device(device)
        self.default_settings = default_settings or SamplingSettings()
        self.is_demo = is_demo
        self.vae_tile = vae_tile
        self.description = description
        self.num_threads = num_threads  # torch intra-op threads while generating (None: leave torch's setting)
        self.process_group = process_group  # sequence parallel over this torch.distributed group (None: one process)
        self.is_main = True
        if process_group is not None:
            from ovi_core.parallel import is_main_process

            self.is_main = is_main_process(process_group)
        self.parts = {k: _Part(labels[k], loaders[k], keep_loaded) for k in labels}
        self._decoders_checked = is_demo  # real decoder files are test-loaded once before the first sampling

    # -- constructors -----------------------------------------------------------------------------------------
    @classmethod
    def from_paths(
        cls,
        fusion: str | os.PathLike,
        text_encoder: str | os.PathLike,
        video_vae: str | os.PathLike,
        audio_vae: str | os.PathLike,
        vocoder: str | os.PathLike | None,
        tokenizer: str | os.PathLike | None = None,
        *,
        variant: str | Variant | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.bfloat16,
        vae_dtype: torch.dtype = torch.float32,
        weight_dtype: str = "auto",
        attention: str = "sdpa",
        keep_loaded: bool = False,
        vae_tile: tuple[int, int] | None = None,
        num_threads: int | None = None,
        process_group=None,
    ) -> OviPipeline:
        """From explicit files (vocoder None: the audio VAE file carries it, as ComfyUI's single MMAudio file).
        Nothing is loaded yet; missing files and a wrong fused file fail here, the decoders at the first generate.
        variant: a Variant (or its name); None: the fused file tells (its metadata or name)."""
        from ovi_core.model_paths import OviWeightPaths, check_paths
        from ovi_core.weights import (
            check_is_fusion_checkpoint,
            config_from_checkpoint,
            inspect_checkpoint,
            resolve_variant,
        )

        opt = lambda p: Path(p) if p is not None else None  # noqa: E731
        paths = OviWeightPaths(Path(fusion), Path(text_encoder), Path(video_vae), Path(audio_vae), opt(vocoder),
                               opt(tokenizer))
        check_paths(paths)
        info = inspect_checkpoint(paths.fusion)  # header only, read once: load_fusion_model gets it
        check_is_fusion_checkpoint(info)
        cfg = config_from_checkpoint(info)
        variant, _ = resolve_variant(info, variant)
        v = get_variant(variant)
        device = torch.device(device) if device is not None else _default_device()

        def load_text():
            from ovi_core.text_encoder import load_text_encoder

            return load_text_encoder(paths.text_encoder, paths.tokenizer, device=device, dtype=dtype)

        def load_fusion():
            from ovi_core.weights import load_fusion_model

            model, _ = load_fusion_model(paths.fusion, device=device, dtype=dtype, weight_dtype=weight_dtype,
                                         config=cfg, variant=v, attention=attention, info=info)
            return model

        def load_video_vae():
            from ovi_core.wan_vae import load_video_vae as load

            return load(paths.video_vae, device=device, dtype=vae_dtype)

        def load_audio():
            from ovi_core.mmaudio_vae import load_audio_decoder

            return load_audio_decoder(paths.audio_vae, paths.vocoder, device=device, dtype=vae_dtype)

        loaders = {"text_encoder": load_text, "fusion": load_fusion, "video_vae": load_video_vae,
                   "audio_decoder": load_audio}
        return cls(v, loaders, num_layers=cfg.num_layers, device=device, keep_loaded=keep_loaded, vae_tile=vae_tile,
                   description=f"Ovi {v.name} on {device}\n{paths.describe()}", num_threads=num_threads,
                   process_group=process_group)

    @classmethod
    def from_weight_paths(cls, paths, **kwargs) -> OviPipeline:
        """From a model_paths.OviWeightPaths (what the finders return)."""
        kwargs.setdefault("variant", paths.variant)
        return cls.from_paths(paths.fusion, paths.text_encoder, paths.video_vae, paths.audio_vae, paths.vocoder,
                              paths.tokenizer, **kwargs)

    @classmethod
    def from_folder(cls, root: str | os.PathLike, variant: str | None = None, fp8: bool = False, **kwargs) -> OviPipeline:
        """From a folder laid out like the reference's download: Ovi/, Wan2.2-TI2V-5B/, MMAudio/ext_weights/."""
        from ovi_core.model_paths import find_in_reference_folder

        return cls.from_weight_paths(find_in_reference_folder(root, variant, fp8), **kwargs)

    @classmethod
    def from_comfy_models(cls, models_dir: str | os.PathLike, variant: str | None = None, fp8: bool = False,
                          **kwargs) -> OviPipeline:
        """From ComfyUI's models folder: ovi/ or diffusion_models/, text_encoders/, vae/ (or mmaudio/)."""
        from ovi_core.model_paths import find_in_comfy_models

        return cls.from_weight_paths(find_in_comfy_models(models_dir, variant, fp8), **kwargs)

    @classmethod
    def demo(cls, seed: int = 0, device: str | torch.device = "cpu", keep_loaded: bool = False,
             num_threads: int | None = None, vae_tile: tuple[int, int] | None = None,
             process_group=None) -> OviPipeline:
        """The built-in tiny model (ovi_core.demo): deterministic untrained weights, no files needed."""
        from ovi_core import demo

        device = torch.device(device)
        loaders = {
            "text_encoder": lambda: demo.build_demo_text_encoder(seed, device),
            "fusion": lambda: demo.build_demo_fusion(seed, device),
            "video_vae": lambda: demo.build_demo_video_vae(seed, device),
            "audio_decoder": lambda: demo.build_demo_audio_decoder(seed, device),
        }
        return cls(demo.DEMO_VARIANT, loaders, num_layers=demo.DEMO_CONFIG.num_layers, device=device,
                   default_settings=demo.DEMO_SETTINGS, is_demo=True, keep_loaded=keep_loaded, vae_tile=vae_tile,
                   description=f"built-in demo model (untrained, {demo.DEMO_SIDE}x{demo.DEMO_SIDE}) on {device}",
                   num_threads=num_threads or demo.DEMO_THREADS, process_group=process_group)

    # -- public API -------------------------------------------------------------------------------------------------
    def settings(self, base: SamplingSettings | None = None, **overrides) -> SamplingSettings:
        """``base`` (default: the pipeline's defaults) with the given values replaced; None values are ignored.
        Raises OviInputError for an unknown name or an invalid value."""
        unknown = set(overrides) - set(SamplingSettings.__dataclass_fields__)
        if unknown:
            raise OviInputError(f"unknown sampling setting(s) {', '.join(sorted(unknown))}; "
                                f"known: {', '.join(SamplingSettings.__dataclass_fields__)}")
        return replace(base or self.default_settings, **{k: v for k, v in overrides.items() if v is not None})

    def generate(
        self,
        prompt: str,
        image=None,
        *,
        height: int | None = None,
        width: int | None = None,
        video_negative_prompt: str = knobs.VIDEO_NEGATIVE.default,
        audio_negative_prompt: str = knobs.AUDIO_NEGATIVE.default,
        settings: SamplingSettings | None = None,
        progress: ProgressCallback | None = None,
        step_callback: StepCallback | None = None,
        should_interrupt: Callable[[], bool] | None = None,
        **sampling,
    ) -> OviResult:
        """One clip. ``sampling`` overrides single settings (seed, steps, solver, shift, video_guidance,
        audio_guidance, slg_layer) of ``settings`` (default: the pipeline's). Errors are raised."""
        settings = self.settings(settings, **sampling)
        request = GenerationRequest(prompt, image, height, width, settings, video_negative_prompt, audio_negative_prompt)
        report = self._run([request], None, progress, step_callback, should_interrupt, stop_on_error=True)
        return report.results[0]

    def generate_batch(
        self,
        requests: list[GenerationRequest],
        on_result: Callable[[int, OviResult], None] | None = None,
        progress: ProgressCallback | None = None,
        should_interrupt: Callable[[], bool] | None = None,
    ) -> BatchReport:
        """Many clips, each model loaded once. A failing request (bad prompt, unreadable image, an error while
        sampling or in ``on_result``) is logged and recorded; the others go on. Ctrl-C / should_interrupt stops all.
        ``on_result(index, result)`` runs as soon as a clip is decoded (e.g. to save it; the result is not kept)."""
        return self._run(list(requests), on_result, progress, None, should_interrupt, stop_on_error=False)

    def release(self) -> None:
        """Free every loaded model (also those kept with keep_loaded)."""
        for part in self.parts.values():
            part.release(force=True)

    # -- the stages -------------------------------------------------------------------------------------------------
    def _run(self, requests, on_result, progress, step_callback, should_interrupt, stop_on_error) -> BatchReport:
        threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            return self._stages(requests, on_result, progress, step_callback, should_interrupt, stop_on_error)
        finally:
            torch.set_num_threads(threads)
            for part in self.parts.values():  # also after an error or Ctrl-C: nothing stays loaded unless kept
                part.release()

    def _stages(self, requests, on_result, progress, step_callback, should_interrupt, stop_on_error) -> BatchReport:
        batch = _Batch([_Row(i, r) for i, r in enumerate(requests)], progress, should_interrupt, stop_on_error)
        with torch.inference_mode():
            # 0. check and prepare every request before any model is loaded; test-load the (small) decoders
            for row in batch.rows:
                batch.attempt(row, "preparation", self._prepare, row)
            self._check_decoders_once(batch)

            # 1. text encoder, then freed (sequence parallel: on rank 0, the embeddings sent to the other ranks)
            #    row.text: prompt, video negative, audio negative, each [tokens, 4096]
            if batch.live():
                self._encode_on_main(batch, "text_encoder", "text", "text encoding", self._encode_text)
                self._share_from_main(batch.rows, "text")

            # 2. first frames (image-to-video) through the VAE encoder (sequence parallel: the same, rank 0)
            #    row.image [1, 3, 1, H, W] -> row.first_frame [1, 48, 1, h, w]
            if batch.live(need_image=True):
                self._encode_on_main(batch, "video_vae", "image", "image encoding", self._encode_image, need_image=True)
                self._share_from_main(batch.rows, "first_frame")
                for row in batch.rows:
                    row.image = None

            # 3. joint sampling: row.latents = video [1, 48, F, h, w], audio [1, L, 20]
            if batch.live():
                self._sample_all(batch, step_callback)

            # 4. decoding; results (frames [T, H, W, 3], audio [1, N]) are handed out one by one
            results = self._decode_all(batch, on_result)
        return BatchReport(results, batch.errors())

    def _check_decoders_once(self, batch: _Batch) -> None:
        """The decoders are small: load them once up front so a wrong file fails now, not after sampling."""
        if batch.live() and not self._decoders_checked and self.is_main:
            for key in ("video_vae", "audio_decoder"):
                self.parts[key].get()
                self.parts[key].release()
            self._decoders_checked = True

    def _encode_on_main(self, batch: _Batch, key: str, stage: str, what: str, encode: Callable,
                        need_image: bool = False) -> None:
        """Stages 1 and 2 on rank 0: ``encode(model, row)`` for every live request with the ``key`` model, then freed."""
        if not self.is_main:
            return
        model = self.parts[key].get()
        for row in batch.live(need_image):
            batch.report(stage, 0, 1, row)
            batch.attempt(row, what, encode, model, row)
            batch.report(stage, 1, 1, row)
        del model
        self.parts[key].release()

    def _sample_all(self, batch: _Batch, step_callback) -> None:
        """Stage 3 on every rank: the fusion model samples every live request (split over the group if parallel)."""
        model = self.parts["fusion"].get()
        if self.process_group is not None and model.sequence_parallel is None:
            model.set_sequence_parallel(self.process_group)
        for row in batch.live():
            batch.attempt(row, "sampling", self._sample, model, row, batch.report, step_callback,
                          batch.should_interrupt)
        del model
        self.parts["fusion"].release()

    def _decode_all(self, batch: _Batch, on_result) -> list[OviResult | None]:
        """Stage 4 on rank 0: each clip decoded and handed to ``on_result`` (or kept in the returned list)."""
        results: list[OviResult | None] = [None] * len(batch.rows)
        if not (batch.live() and self.is_main):
            return results
        vae, audio_decoder = self.parts["video_vae"].get(), self.parts["audio_decoder"].get()
        for row in batch.live():
            result = batch.attempt(row, "decoding", self._decode, vae, audio_decoder, row, batch.report)
            row.latents = None
            if result is None:
                continue
            if on_result is not None:
                batch.attempt(row, "saving", on_result, row.index, result)
            else:
                results[row.index] = result
        del vae, audio_decoder
        self.parts["video_vae"].release()
        self.parts["audio_decoder"].release()
        return results

    def _share_from_main(self, rows: list[_Row], attr: str) -> None:
        """Sequence parallel: every rank gets rank 0's ``row.<attr>`` (CPU tensors, broadcast as one object); a
        request that failed on rank 0 fails on every rank, so all ranks sample the same requests."""
        if self.process_group is None:
            return
        import torch.distributed as dist

        payload = [[(getattr(r, attr), r.error is None) for r in rows]] if self.is_main else [None]
        dist.broadcast_object_list(payload, src=dist.get_global_rank(self.process_group, 0), group=self.process_group)
        for row, (value, ok) in zip(rows, payload[0]):
            setattr(row, attr, value)
            if row.error is None and not ok:
                row.error = OviError(f"request {row.index + 1} failed on rank 0 (see its log)")

    def _prepare(self, row: _Row) -> None:
        from ovi_core.prompt import check_negative_prompt, format_prompt_for_variant
        from ovi_core.sizes import latent_shapes

        req = row.request
        if not isinstance(req.prompt, str) or not req.prompt.strip():
            raise OviInputError("the prompt is empty; describe the video (speech in <S>...<E>, sound in "
                                "<AUDCAP>...<ENDAUDCAP> or a final 'Audio: ...')")
        row.settings = req.settings if req.settings is not None else self.default_settings
        # a SamplingSettings is valid once built; new here is the model's depth, which bounds slg_layer
        knobs.check(knobs.SLG_LAYER, row.settings.slg_layer, num_layers=self.num_layers)
        check_negative_prompt(req.video_negative_prompt, "video")
        check_negative_prompt(req.audio_negative_prompt, "audio")
        row.prompt = format_prompt_for_variant(req.prompt, self.variant)
        side = math.isqrt(self.variant.target_area)
        width = height = None  # image-to-video without a size: the image's (the original's rule, in first_frame)
        if req.image is None or req.height is not None or req.width is not None:  # the request's, at the model's area
            shapes = latent_shapes(self.variant, side if req.height is None else req.height,
                                   side if req.width is None else req.width)
            width, height = shapes.width, shapes.height
        if req.image is not None:  # the first frame: ovi_core.media's rule, the nodes' too
            row.image = first_frame(req.image, width, height, self.variant.target_area)
            shapes = latent_shapes(self.variant, row.image.shape[3], row.image.shape[4], snap=False)
        row.video_shape, row.audio_shape = shapes.video, shapes.audio

    def _encode_text(self, encoder, row: _Row) -> None:
        req = row.request
        pos, vneg, aneg = encoder.encode([row.prompt, req.video_negative_prompt, req.audio_negative_prompt])
        row.text = PromptEmbeddings(pos.cpu(), vneg.cpu(), aneg.cpu())

    def _encode_image(self, vae, row: _Row) -> None:
        row.first_frame = vae.encode(row.image.to(vae.device, vae.dtype)).float().cpu()  # [1, 48, 1, h, w]
        row.image = None

    def _sample(self, model, row: _Row, report, step_callback, should_interrupt) -> None:
        def on_step(step, total, latents):
            report("sample", step, total, row)
            if step_callback is not None:
                step_callback(step, total, latents)

        report("sample", 0, row.settings.steps, row)
        video, audio = sample_joint(model, row.text, video_shape=row.video_shape, audio_shape=row.audio_shape,
                                    first_frame_latent=row.first_frame, callback=on_step, should_interrupt=should_interrupt,
                                    **row.settings.as_kwargs())
        row.latents = (video.cpu(), audio.cpu())
        row.text = row.first_frame = None

    def _decode(self, vae, audio_decoder, row: _Row, report) -> OviResult:
        video_latent, audio_latent = row.latents
        latent_frames = video_latent.shape[2]
        parts = latent_frames + 1  # one tick per latent frame of video (tiles folded in), one for the audio
        report("decode", 0, parts, row)
        pixels = vae.decode(video_latent.to(vae.device), tile=self.vae_tile, output_device="cpu",
                            progress=lambda done, total: report("decode", done * latent_frames // total, parts, row))
        frames = clip_to_images(pixels[:1])  # [T, H, W, 3] in 0..1
        del pixels
        wave = audio_decoder.decode(audio_latent.transpose(1, 2).to(self.device))  # [1, 1, N] at 16 kHz
        audio = wave[0].float().cpu()
        report("decode", parts, parts, row)
        if not torch.isfinite(frames).all() or not torch.isfinite(audio).all():
            raise OviError("the decoded clip contains NaN/inf values: the sampling diverged (try fewer steps, a lower "
                           "guidance, another seed, or float32/bfloat16 instead of float16)")
        return OviResult(frames=frames, audio=audio, sample_rate=int(getattr(audio_decoder, "sample_rate", 16000)),
                         fps=self.variant.fps, prompt=row.prompt, settings=row.settings, variant=self.variant.name,
                         is_demo=self.is_demo, image_to_video=row.request.image is not None)


__all__ = ["BatchReport", "GenerationRequest", "OviPipeline", "OviResult", "Progress"]
