"""Video -> audio and audio -> video on the native path (V3): Ovi Audio Encode, Ovi Video To Audio, Ovi AV Latent From
Parts. Each builds (part of) the joint audio+video LATENT whose per-modality ``noise_mask`` (0 = keep) tells the Ovi
MODEL what to hold: kept parts are shown to the model clean (timestep 0) and come out of SamplerCustomAdvanced + Ovi
Guider bit for bit (nodes/native_model.py).

Graphs:
  sound for a clip:   frames + fps -> Ovi Video To Audio -> SamplerCustomAdvanced -> LTXVSeparateAVLatent -> audio ->
                      Ovi Audio Decode -> Ovi Mux (the ORIGINAL frames at their fps: the sound is fitted to that
                      duration by Ovi Mux)
  picture for sound:  AUDIO -> Ovi Audio Encode -> Ovi AV Latent From Parts (keep_audio, optional start_image) ->
                      SamplerCustomAdvanced -> ... video -> Ovi Video Decode -> Ovi Mux

Stated rules:
  * frame grid (``frame_grid``): Ovi's clip is N frames at 24 fps (121 for the 5 s models, 241 for 10 s). Output frame
    i (time i/24 s) is the source frame nearest in time, index floor(i * fps / 24 + 1/2); past the source's last frame
    the last frame is repeated (padding); source frames after the window are cut. Logged (a WARNING when frames are
    padded or cut, INFO otherwise).
  * frame size: each frame as the start image of image-to-video (ovi_core.media: resized whole when the clip's size
    is the one Ovi gives the frames' aspect ratio, else centre-cropped to the clip's aspect ratio first; bicubic,
    no antialias).
  * audio: ovi_core.audio_input.prepare_audio — mixed to mono by averaging, resampled to 16 kHz, the END trimmed or
    padded with silence to the window (5.024 s / 10.048 s); logged.

ComfyUI-only (imports comfy through native_nodes).
"""

from __future__ import annotations

import logging
import math

import comfy.model_sampling
import comfy.nested_tensor
import comfy.utils
import torch
from comfy_api.latest import io

from ovi_core import knobs
from ovi_core.audio_input import encode_audio_batch
from ovi_core.config import FPS
from ovi_core.errors import OviInputError
from ovi_core.media import clip_to_images, images_to_clip
from ovi_core.sizes import VAE_STRIDE, check_clip_size

from . import bridge, native_nodes
from . import native_model as native
from .bridge import knob_input
from .convert import audio_from_comfy, audio_latent_to_comfy, states_to_conditioning, video_latent_to_comfy
from .handles import OviAudioVAEType, OviVideoVAEType
from .sampling import encode_start_image

log = logging.getLogger(__name__)

CATEGORY = "Ovi/native"


# ---- rules ---------------------------------------------------------------------------------------------------------
def check_fps(fps) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise OviInputError(f"fps must be the source clip's frames per second, a positive finite number (e.g. 24, 25, "
                            f"30); got {fps!r}. GetVideoComponents gives it for a video from LoadVideo")
    return float(fps)


def check_frames(images, what: str = "images") -> torch.Tensor:
    """IMAGE [T, H, W, C] with T >= 2 (a view: a long clip is not copied; its channels are read by
    ovi_core.media.images_to_clip); a clear message otherwise."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise OviInputError(f"{what} must be an IMAGE batch of frames [frames, height, width, 3]; got {shape}")
    if images.shape[0] == 0 or min(images.shape[1:3]) < 1:
        raise OviInputError(f"{what} holds no frames ({list(images.shape)}); connect a clip (LoadVideo -> "
                            "GetVideoComponents, or a video model's decoded frames)")
    if images.shape[0] == 1:
        raise OviInputError(f"{what} is a single image; Ovi Video To Audio makes sound for a clip of several frames. "
                            "For a picture that should move, use Ovi AV Latent From Parts with a start_image (or "
                            "repeat the image into a batch with core RepeatImageBatch for a still clip)")
    if images.shape[-1] not in (1, 3, 4):
        raise OviInputError(f"{what} has {images.shape[-1]} channels; expected RGB (3) or RGBA (4) frames")
    return images


def frame_grid(source_frames: int, fps: float, frames: int, out_fps: int = FPS) -> tuple[list[int], int, int]:
    """(source index of each of ``frames`` output frames, frames padded by repeating the last, source frames cut).

    Nearest frame in time: output frame i at i / out_fps s takes source frame floor(i * fps / out_fps + 1/2)
    (the 1e-9 absorbs float error at exact ties, which go to the later frame); past the end, the last frame."""
    raw = [math.floor(i * fps / out_fps + 0.5 + 1e-9) for i in range(frames)]
    padded = sum(1 for r in raw if r >= source_frames)
    index = [min(r, source_frames - 1) for r in raw]
    cut = max(0, source_frames - 1 - index[-1])
    return index, padded, cut


def fit_frames(images: torch.Tensor, fps: float, frames: int) -> torch.Tensor:
    """The clip on Ovi's frame grid (``frame_grid``), logged."""
    n = images.shape[0]
    index, padded, cut = frame_grid(n, fps, frames)
    src = f"{n} frames at {fps:g} fps ({n / fps:.3f} s)"
    window = f"{frames} frames at {FPS} fps ({frames / FPS:.3f} s)"
    if padded or cut:
        what = []
        if padded:
            what.append(f"the last frame repeated {padded} times to fill the window")
        if cut:
            what.append(f"{cut} source frames ({cut / fps:.3f} s) after the window cut")
        log.warning("Ovi Video To Audio: %s -> %s by nearest frame in time; %s", src, window, ", ".join(what))
    else:
        log.info("Ovi Video To Audio: %s -> %s by nearest frame in time", src, window)
    return images[torch.tensor(index)]


def check_audio(audio) -> tuple[torch.Tensor, int]:
    return audio_from_comfy(audio)


# ---- the joint latent from parts -----------------------------------------------------------------------------------
def _part(latent, dims: int, name: str):
    if latent is None:
        return None, None
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if getattr(samples, "is_nested", False):
        raise OviInputError(f"{name} is a joint audio+video LATENT; split it with LTXVSeparateAVLatent and connect "
                            f"its {name} part")
    if not isinstance(samples, torch.Tensor) or samples.dim() != dims:
        shape = list(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        want = "[batch, 48, frames, H/16, W/16]" if dims == 5 else "[batch, 20, length]"
        raise OviInputError(f"{name} must be a {name} LATENT {want}; got {shape}")
    mask = latent.get("noise_mask")
    return samples.float(), mask


def av_latent_from_parts(width: int, height: int, length, video=None, keep_video: bool = True, audio=None,
                         keep_audio: bool = False, start_latent: torch.Tensor | None = None) -> dict:
    """The joint LATENT of a video part and an audio part, each given (a LATENT) or empty (zeros of the size),
    with the nested noise_mask: 0 on a kept part (keep_* with that part given), 0 on video frame 0 when
    ``start_latent`` (a raw first-frame latent [B, 48, 1, h, w]) is given, 1 elsewhere. A given part that is not kept
    keeps its own noise_mask (e.g. core Wan22ImageToVideoLatent's frame-0 mask). No mask at all when nothing is
    kept."""
    frames, steps = native_nodes.latent_lengths(length)
    v, vmask_in = _part(video, 5, "video")
    a, amask_in = _part(audio, 3, "audio")
    if keep_video and v is None:
        raise OviInputError("keep_video is on but no video LATENT is connected: connect one (Ovi Video To Audio, "
                            "VAEEncode with wan2.2_vae) or turn keep_video off to generate the video")
    if keep_audio and a is None:
        raise OviInputError("keep_audio is on but no audio LATENT is connected: connect Ovi Audio Encode's latent, "
                            "or turn keep_audio off to generate the audio")
    if start_latent is not None and keep_video:
        raise OviInputError("a start_image and keep_video together: the whole video is already kept; turn keep_video "
                            "off to generate the video from the start image")
    batch = {x.shape[0] for x in (v, a, start_latent) if x is not None}
    if len(batch) > 1:
        raise OviInputError(f"the parts hold different batch sizes {sorted(batch)}; give clips of one batch size")
    b = batch.pop() if batch else 1
    if v is None:
        width, height = check_clip_size(width, height, None, "any Ovi model")
        v = torch.zeros(b, 48, frames, height // VAE_STRIDE, width // VAE_STRIDE)
        if start_latent is not None and tuple(start_latent.shape[3:]) != tuple(v.shape[3:]):
            raise OviInputError(f"start latent {list(start_latent.shape)} does not fit {width}x{height}")
    elif v.shape[1] != 48 or v.shape[2] != frames:
        raise OviInputError(f"the video LATENT has shape {list(v.shape)}; a {length} clip needs [batch, 48, {frames}, "
                            "H/16, W/16] (Wan2.2-TI2V-5B / Ovi latents; length must match the clip)")
    if a is None:
        a = torch.zeros(b, 20, steps)
    elif a.shape[1] != 20 or a.shape[2] != steps:
        raise OviInputError(f"the audio LATENT has shape {list(a.shape)}; a {length} clip needs [batch, 20, {steps}] "
                            "(Ovi Audio Encode with the same length)")
    vm = torch.ones(b, 1, *v.shape[2:])
    am = torch.ones(b, 1, a.shape[2])
    if keep_video:
        vm.zero_()
    elif vmask_in is not None:
        vm = vmask_in.float().reshape(-1, 1, *vmask_in.shape[-3:]).expand(b, 1, -1, -1, -1).clone() \
            if vmask_in.dim() >= 3 else vm
    if start_latent is not None:
        v = v.clone()
        v[:, :, :1] = start_latent.to(v)
        vm[:, :, :1] = 0.0
    if keep_audio:
        am.zero_()
    elif amask_in is not None:
        am = amask_in.float().reshape(b, 1, -1).clone()
    out = {"samples": comfy.nested_tensor.NestedTensor((v, a))}
    if bool((vm != 1).any()) or bool((am != 1).any()):
        out["noise_mask"] = comfy.nested_tensor.NestedTensor((vm, am))
    kept = [w for w, m in (("the whole video", keep_video), ("the whole audio", keep_audio),
                           ("video frame 0 (start image)", start_latent is not None)) if m]
    log.info("Ovi AV latent: video %s, audio %s; kept (noise mask 0): %s", list(v.shape), list(a.shape),
             ", ".join(kept) or "nothing")
    return out


# ---- nodes ---------------------------------------------------------------------------------------------------------
class OviAudioEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviAudioEncode", display_name="Ovi Audio Encode", category=CATEGORY,
            description="Encodes sound (any sample rate, channels, batch) into Ovi's audio LATENT with the MMAudio "
                        "VAE encoder: mixed to mono, resampled to 16 kHz, the end trimmed or padded with silence.",
            inputs=[
                OviAudioVAEType.Input("audio_vae", tooltip="From Ovi Audio VAE Loader (v1-16.pth holds the encoder; "
                                                           "the demo entry for the demo model)."),
                io.Audio.Input("audio", tooltip="Any AUDIO (LoadAudio, a TTS node, ...): mono or stereo, any rate. "
                                                "Speech keeps its place in time: only the end is trimmed or padded."),
                knob_input(knobs.LENGTH, extra=native_nodes.LENGTHS_NOTE),
            ],
            outputs=[io.Latent.Output(tooltip="MMAudio latent [batch, 20, 157 or 314]: Ovi AV Latent From Parts "
                                              "(keep_audio), LTXVConcatAVLatent, Ovi Audio Decode.")],
        )

    @classmethod
    def validate_inputs(cls, length=None):
        if length is not None:
            native_nodes.latent_lengths(length)
        return True

    @classmethod
    def execute(cls, audio_vae, audio, length) -> io.NodeOutput:
        _, steps = native_nodes.latent_lengths(length)
        wave, rate = check_audio(audio)
        if not hasattr(audio_vae, "acquire_encoder"):
            raise OviInputError("audio_vae must come from Ovi Audio VAE Loader")
        latent = encode_audio_batch(audio_vae.acquire_encoder(), wave, rate, num_latents=steps)  # [B, L, 20]
        return io.NodeOutput(audio_latent_to_comfy(latent, bridge.intermediate_device()))


class OviVideoToAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviVideoToAudio", display_name="Ovi Video To Audio", category=CATEGORY,
            description="Frames of a silent clip (any count and fps) -> the joint LATENT holding that video (noise "
                        "mask 0) with the audio left to generate: sound for a clip with SamplerCustomAdvanced + Ovi "
                        "Guider.",
            inputs=[
                OviVideoVAEType.Input("video_vae", tooltip="From Ovi Video VAE Loader (Wan2.2 VAE, encoder needed)."),
                io.Image.Input("images", tooltip="The clip's frames in order (GetVideoComponents, a video model's "
                                                 "decoded frames, ...)."),
                io.Float.Input("fps", default=24.0, min=0.01, max=1000.0, step=0.001,
                               tooltip="The frames' rate (GetVideoComponents' fps). They are put on Ovi's 24 fps "
                                       "grid by nearest frame in time; a short clip repeats its last frame, a long "
                                       "one is cut (logged)."),
                knob_input(knobs.WIDTH, extra="The frames are resized to it, centre-cropped to width:height first "
                                              "unless it is Ovi's size for their aspect ratio (the model's size: 704 "
                                              "for 720x720_5s, 960 for the 960 models, 64 for the demo)."),
                knob_input(knobs.HEIGHT, extra="See width."),
                knob_input(knobs.LENGTH, extra=native_nodes.LENGTHS_NOTE),
            ],
            outputs=[
                io.Latent.Output("latent", tooltip="The joint LATENT: the clip's video kept (mask 0), the audio "
                                                   "generated. For SamplerCustomAdvanced with Ovi Guider."),
                io.Image.Output("frames", tooltip="The frames as encoded (Ovi's grid and size), to check the fit."),
            ],
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None, length=None):
        if width is not None and height is not None:
            check_clip_size(width, height, None, "any Ovi model")
        if length is not None:
            native_nodes.latent_lengths(length)
        return True

    @classmethod
    def execute(cls, video_vae, images, fps, width, height, length) -> io.NodeOutput:
        fps = check_fps(fps)
        width, height = check_clip_size(width, height, None, "any Ovi model")
        latents, _ = native_nodes.latent_lengths(length)
        frames = check_frames(images)
        grid = fit_frames(frames, fps, 4 * (latents - 1) + 1).float()  # only the window's frames are copied
        clip = images_to_clip(grid, width, height)  # [1, 3, T, H, W] in [-1, 1]
        if not hasattr(video_vae, "acquire"):
            raise OviInputError("video_vae must come from Ovi Video VAE Loader")
        encoded = video_vae.acquire().encode(clip)  # normalised [1, 48, F, h, w]
        video = video_latent_to_comfy(encoded, torch.device("cpu"))
        latent = av_latent_from_parts(width, height, length, video=video, keep_video=True)
        shown = clip_to_images(clip)  # [T, H, W, 3]
        return io.NodeOutput(latent, shown.to(bridge.intermediate_device()))


class OviAVLatentFromParts(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviAVLatentFromParts", display_name="Ovi AV Latent From Parts", category=CATEGORY,
            description="Builds Ovi's joint audio+video LATENT from a video and/or an audio LATENT and says which to "
                        "keep (noise mask 0) and which to generate; an optional start image keeps video frame 0.",
            inputs=[
                knob_input(knobs.WIDTH, extra="Used when no video LATENT is connected."),
                knob_input(knobs.HEIGHT, extra="Used when no video LATENT is connected."),
                knob_input(knobs.LENGTH, extra=native_nodes.LENGTHS_NOTE),
                io.Boolean.Input("keep_video", default=False,
                                 tooltip="Keep the connected video as it is (video -> audio); off: generate it."),
                io.Boolean.Input("keep_audio", default=True,
                                 tooltip="Keep the connected audio as it is (audio -> video); off: generate it."),
                io.Latent.Input("video", optional=True,
                                tooltip="A video LATENT [B, 48, F, H/16, W/16] (raw Wan2.2, as VAEEncode with "
                                        "wan2.2_vae). Not connected: empty, width x height."),
                io.Latent.Input("audio", optional=True, tooltip="An audio LATENT [B, 20, L] (Ovi Audio Encode)."),
                io.Image.Input("start_image", optional=True,
                               tooltip="Keep this picture as video frame 0 (image + voice -> talking clip). "
                                       "Resized as Ovi Sampler's start_image (whole when width x height is Ovi's "
                                       "size for its aspect ratio, else centre-cropped first). Needs video_vae."),
                OviVideoVAEType.Input("video_vae", optional=True, tooltip="Encodes the start image."),
            ],
            outputs=[io.Latent.Output(tooltip="The joint LATENT with per-modality noise masks: for "
                                              "SamplerCustomAdvanced with Ovi Guider.")],
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None, length=None):
        return OviVideoToAudio.validate_inputs(width=width, height=height, length=length)

    @classmethod
    def execute(cls, width, height, length, keep_video, keep_audio, video=None, audio=None, start_image=None,
                video_vae=None) -> io.NodeOutput:

        start = None
        if start_image is not None:
            if video is not None:
                height, width = video["samples"].shape[3] * 16, video["samples"].shape[4] * 16
            width, height = check_clip_size(width, height, None, "any Ovi model")
            start = video_latent_to_comfy(encode_start_image(start_image, video_vae, width, height),
                                          torch.device("cpu"))["samples"]
        return io.NodeOutput(av_latent_from_parts(width, height, length, video, keep_video, audio, keep_audio, start))


# ---- Ovi Sampler's native path for held parts (nodes/sampling.py calls it with ComfyUI) ----------------------------
def _with_shift(model, shift: float):
    """The MODEL with Ovi's timestep shift (core ModelSamplingSD3's object patch) unless it has it already."""
    current = float(model.get_model_object("model_sampling").shift)
    if abs(current - shift) < 1e-9:
        return model

    class ModelSamplingAdvanced(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    patched = model.clone()
    sampling = ModelSamplingAdvanced(model.model.model_config)
    sampling.set_parameters(shift=shift, multiplier=1000)
    patched.add_object_patch("model_sampling", sampling)
    return patched


def sample_masked(model, text, seed, steps, solver, shift, video_guidance, audio_guidance, slg_layer, latent,
                  sync_guidance: float = knobs.SYNC_GUIDANCE.default, sync_cut: str = knobs.SYNC_CUT.default):
    """A joint LATENT whose noise_mask holds a whole modality or a leading run (V2A, A2V): the native path with Ovi's
    exact solver (ovi_sampler), Ovi's noise for the seed and Ovi's guidance — what SamplerCustomAdvanced + Ovi Guider
    + Ovi Sampler Select + Ovi Scheduler + Ovi Noise compute. Kept elements come back bit for bit.
    -> (video LATENT, audio LATENT, joint LATENT), raw Wan2.2 video as everywhere in the pack."""

    patched = _with_shift(model, float(shift)).clone()
    patched.model_options.setdefault("transformer_options", {})[native.SLG_OPTION] = max(int(slg_layer), 0)
    guider = native.OviGuider(patched, video_guidance, audio_guidance, sync_guidance, sync_cut)
    guider.set_conds(states_to_conditioning(text.positive), states_to_conditioning(text.video_negative),
                     states_to_conditioning(text.audio_negative))
    noise = native.OviNoise(seed).generate_noise(latent)
    bar = comfy.utils.ProgressBar(steps)
    samples = guider.sample(noise, latent["samples"], native.ovi_sampler(solver), native.ovi_sigmas(solver, steps, shift),
                            denoise_mask=latent["noise_mask"], callback=lambda i, *_: bar.update_absolute(i + 1, steps),
                            disable_pbar=True, seed=seed)
    video, audio = samples.unbind()
    out = bridge.intermediate_device()
    video_latent, audio_latent = {"samples": video.to(out)}, {"samples": audio.to(out), "type": "audio"}
    return video_latent, audio_latent, {"samples": bridge.nested((video_latent["samples"], audio_latent["samples"]))}


AV_NODES = [OviAudioEncode, OviVideoToAudio, OviAVLatentFromParts]
