"""Ovi as a native ComfyUI model: the MODEL Ovi Model Loader returns (``build_model_patcher``), and the pieces the
native-path nodes (nodes/native_nodes.py) wrap. ComfyUI only: imported by the pack inside functions, when ComfyUI is
there (bridge.native_model()).

What ComfyUI's stock sampling path needs, and where it is here:
  * a ``comfy.model_base.BaseModel`` subclass holding the torch module as ``diffusion_model`` (``OviAV``; the module
    is the ovi_core ``OviFusion`` itself, so ``state_dict`` keys are ``diffusion_model.<checkpoint key>`` and core's
    LoRA key maps apply), flow prediction (``ModelType.FLOW``: ``ModelSamplingDiscreteFlow`` + ``CONST``, so the
    model timestep is ``1000·σ`` in float32, exactly the float timesteps Ovi's euler path feeds the model), Ovi's
    shift 5.0 as the default (core ``ModelSamplingSD3`` replaces it);
  * the joint LATENT ``NestedTensor((video [B, 48, F, h, w], audio [B, 20, L]))``: ``CFGGuider.sample`` packs it to
    ``[B, 1, N]`` and hands ``latent_shapes`` to ``extra_conds``; the model unpacks, runs both towers, packs the
    velocities (as core ``LTXAV`` does). The video part is in ComfyUI's raw Wan2.2 convention (core ``VAEDecode``
    with ``wan2.2_vae`` decodes it; ``process_latent_in`` normalises it), the audio part is the MMAudio latent
    channel-first (the pack's and Ovi's audio latent is channel-last ``[B, L, 20]``: transposed at the model);
  * per-modality denoise masks (``noise_mask`` NestedTensor, 1 = generate, 0 = keep): the kept tokens are given to
    the model clean with timestep 0 (Ovi's image-to-video first frame is the case "keep video frame 0"), and the
    kept elements come out of sampling bit for bit (an OUTER_SAMPLE wrapper restores them after the last step);
  * text as CONDITIONING: the umT5-XXL states ``[1, tokens, 4096]`` go to both towers; a conditioning entry may
    carry ``"ovi_audio_context"`` (the audio tower's own text, e.g. Ovi's audio negative prompt). Both are zero-padded
    to Ovi's 512 tokens in ``extra_conds``; the text keys/values are computed once per distinct text and reused;
  * skip-layer guidance inside core CFG: the rows core marks as unconditional (``cond_or_uncond``) skip fused block
    ``slg_layer`` in the forward, as Ovi's negative pass does.

The forward is ``OviFusion.forward`` with per-modality timesteps (``audio_t``) and clean prefixes
(``clean_video_frames`` / ``clean_audio_steps``), computing on the device of the latent core hands the model.
"""

from __future__ import annotations

import logging
import math

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.nested_tensor
import comfy.patcher_extension
import comfy.samplers
import comfy.supported_models_base
import comfy.utils
import torch

from ovi_core import knobs
from ovi_core.errors import OviInputError
from ovi_core.fusion import OviFusion, TextContext
from ovi_core.sampler import make_noise, sync_targets
from ovi_core.schedulers import make_scheduler
from ovi_core.sizes import AUDIO_LATENT_CHANNELS, VIDEO_LATENT_CHANNELS

from .convert import AUDIO_CONTEXT_KEY  # optional CONDITIONING dict entry: the audio tower's own text states

logger = logging.getLogger(__name__)

SLG_OPTION = "ovi_slg_layer"  # transformer_options entry overriding the model's skip layer (0 or -1 = off)
TIMESTEP_OPTION = "ovi_timestep"  # transformer_options entry: the exact model timestep of this step (Ovi's solvers)
FUSION_CUT_OPTION = "ovi_fusion_cut"  # transformer_options entry: the forward's fusion_cut (OviGuider's sync pass)
WRAPPER_KEY = "ovi_native"


# ---- latent format and model config --------------------------------------------------------------------------------
class OviAVLatentFormat(comfy.latent_formats.Wan22):
    """The video part is a Wan2.2 latent (raw in the LATENT, normalised inside the model); the audio part is used
    as is. No latent preview for the packed joint latent (as core's LTXAV format)."""

    latent_rgb_factors = None
    latent_rgb_factors_bias = None

    def __init__(self):
        super().__init__()
        self.taesd_decoder_name = None


class OviAVConfig(comfy.supported_models_base.BASE):
    unet_config = {"image_model": "ovi", "disable_unet_model_creation": True}
    unet_extra_config = {}
    sampling_settings = {"shift": knobs.SHIFT.default, "multiplier": 1000}
    latent_format = OviAVLatentFormat
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]


# ---- masks -> per-modality timesteps -------------------------------------------------------------------------------
def _unit_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    """An element mask [B, C, F, h, w] (video) or [B, C, L] (audio) -> one value per latent frame / step [B, U].

    Ovi's time embedding is per token, and a token spans all channels (and a 2x2 patch): the mask must be uniform
    across those."""
    flat = mask.transpose(1, 2).flatten(2)  # [B, U, C·h·w]
    lo, hi = flat.amin(dim=2), flat.amax(dim=2)
    if not torch.equal(lo, hi):
        raise OviInputError(
            f"the {name} noise mask varies inside a latent {'frame' if name == 'video' else 'step'} (across channels "
            f"or pixels); Ovi's model takes one value per latent {'frame' if name == 'video' else 'step'}: "
            "keep whole frames/steps (mask 0) and generate the others"
        )
    return lo


def _mask_timesteps(mask: torch.Tensor | None, t: torch.Tensor, name: str) -> tuple[torch.Tensor, int]:
    """(timesteps [B, U], clean units) for one modality.

    The model runs a kept (mask 0) leading run of frames/steps clean with timestep 0 and the rest at c·t, c being
    the mask value of the rest (1 for plain generation) — core LTXAV's ``mask · t`` restricted to what Ovi's
    modulation can express (one clean prefix, as image-to-video). U = 2 when there is a clean prefix, else 1."""
    if mask is None:
        return t[:, None], 0
    m = _unit_mask(mask, name)  # [B, U]
    kept = (m == 0).int()
    prefix = kept.cumprod(dim=1).sum(dim=1)  # leading kept units per row
    k = int(prefix[0])
    if not torch.all(prefix == k):
        raise OviInputError(f"the {name} noise mask keeps a different number of leading units in different batch rows")
    units = m.shape[1]
    if k == units:
        return torch.zeros_like(t)[:, None], 0  # the whole modality is kept: clean, t = 0
    rest = m[:, k:]
    c = rest[:, :1]
    if not torch.equal(rest, c.expand_as(rest)):
        raise OviInputError(
            f"unsupported {name} noise mask: Ovi's model keeps a leading run of latent "
            f"{'frames' if name == 'video' else 'steps'} (mask 0) and generates all the others with one strength; "
            f"got per-unit values {m[0].tolist()}"
        )
    c = c[:, 0]
    tc = t if bool(torch.all(c == 1)) else t.float() * c.float()  # t may be Ovi's int64 timestep (ovi_sampler)
    if k == 0:
        return tc[:, None], 0
    return torch.stack([tc, torch.zeros_like(tc)], dim=1), k


class _TextCache:
    """The text keys/values of the last few distinct (video text, audio text) batches: core hands the model the
    same contexts at every step, Ovi's sampler computes their keys/values once per generation."""

    def __init__(self, size: int = 2):
        self.size, self.entries = size, []

    def get(self, fusion: OviFusion, ctx_v: torch.Tensor, ctx_a: torch.Tensor) -> TextContext:
        """On the contexts' device."""
        for cv, ca, text in self.entries:
            same_shape = cv.shape == ctx_v.shape and ca.shape == ctx_a.shape
            if same_shape and torch.equal(cv, ctx_v) and torch.equal(ca, ctx_a):
                return text
        text = fusion.prepare_text(ctx_v, ctx_a, batch=ctx_v.shape[0], device=ctx_v.device)
        self.entries = [(ctx_v, ctx_a, text)] + self.entries[: self.size - 1]
        return text

    def clear(self):
        self.entries = []


def _pad_text(context: torch.Tensor, text_len: int, name: str) -> torch.Tensor:
    """[B, tokens, 4096] -> [B, text_len, 4096] zero-padded (Ovi pads with zeros; core's cross-attention concat would
    repeat the shorter context instead)."""
    if context.dim() == 2:
        context = context.unsqueeze(0)
    if context.shape[1] > text_len:
        raise OviInputError(f"the {name} text has {context.shape[1]} tokens; Ovi takes at most {text_len}")
    if context.shape[1] == text_len:
        return context
    pad = context.new_zeros(context.shape[0], text_len - context.shape[1], context.shape[2])
    return torch.cat([context, pad], dim=1)


# ---- the model -----------------------------------------------------------------------------------------------------
class OviAV(comfy.model_base.BaseModel):
    """Ovi's fused audio+video DiT for ComfyUI's samplers: flow prediction over the packed joint latent."""

    def __init__(self, model_config: OviAVConfig, fusion: OviFusion, slg_layer: int = knobs.SLG_LAYER.default,
                 device=None):
        super().__init__(model_config, comfy.model_base.ModelType.FLOW, device=device)
        self.diffusion_model = fusion
        self.slg_layer = slg_layer
        self.latent_shapes = None  # the packed latent's parts, set by the OUTER_SAMPLE wrapper at each sampling
        self.text_cache = _TextCache()
        self.memory_usage_factor_conds = ()

    def get_dtype(self):
        return next(self.diffusion_model.parameters()).dtype

    def extra_lora_keys(self) -> dict[str, str]:
        """LoRA layer names core's key map lacks for Ovi (``lora_key_map``); core's model_lora_keys_unet consults
        this through ``install_lora_support``."""
        return lora_key_map(self.state_dict().keys())

    # -- conditioning (called once per cond by process_conds) --
    def extra_conds(self, **kwargs):
        out = {}
        text_len = self.diffusion_model.cfg.video.text_len
        cross_attn = kwargs.get("cross_attn", None)
        if cross_attn is not None:
            out["c_crossattn"] = comfy.conds.CONDRegular(_pad_text(cross_attn, text_len, "prompt"))
            audio_ctx = kwargs.get(AUDIO_CONTEXT_KEY, None)
            audio_ctx = cross_attn if audio_ctx is None else audio_ctx
            out["audio_crossattn"] = comfy.conds.CONDRegular(_pad_text(audio_ctx, text_len, "audio"))

        denoise_mask = kwargs.get("concat_mask", kwargs.get("denoise_mask", None))
        latent_shapes = kwargs.get("latent_shapes", None)
        if denoise_mask is not None and latent_shapes is not None and len(latent_shapes) == 2:
            video_mask, audio_mask = comfy.utils.unpack_latents(denoise_mask, latent_shapes)
            out["denoise_mask"] = comfy.conds.CONDRegular(video_mask)
            out["audio_denoise_mask"] = comfy.conds.CONDRegular(audio_mask)
        if latent_shapes is not None:
            out["latent_shapes"] = comfy.conds.CONDConstant(latent_shapes)
        return out

    def scale_latent_inpaint(self, sigma, noise, latent_image, **kwargs):
        return latent_image  # kept tokens are shown to the model clean (with t = 0), as core's LTXAV

    # -- the raw <-> model-space latent (the video part is normalised; packed latents need latent_shapes) --
    def _per_part(self, latent, video_fn):
        if not latent.is_nested and latent.dim() == 5:
            return video_fn(latent)
        shapes = self.latent_shapes
        if shapes is None or len(shapes) != 2:
            raise OviInputError("Ovi samples the joint audio+video LATENT (Ovi Empty Latent or LTXVConcatAVLatent); "
                                "got a single latent")
        video, audio = comfy.utils.unpack_latents(latent, shapes)
        return comfy.utils.pack_latents([video_fn(video), audio])[0]

    def process_latent_in(self, latent):
        return self._per_part(latent, self.latent_format.process_in)

    def process_latent_out(self, latent):
        return self._per_part(latent, self.latent_format.process_out)

    def memory_required(self, input_shape, cond_shapes={}):  # noqa: B006 (core BaseModel's signature, read only)
        """Activation memory of one forward, from the token counts (a rough bound; core's formula assumes pixels)."""
        cfg = self.diffusion_model.cfg
        shapes = self.latent_shapes
        if shapes is None or len(shapes) != 2:
            tokens = math.prod(input_shape[2:]) // 4
        else:
            tokens = math.prod(shapes[0][2:]) // 4 + shapes[1][2]
        per_token = (8 * cfg.video.dim + 2 * cfg.video.ffn_dim) * 4  # float32 residuals + one FFN hidden state
        return input_shape[0] * tokens * per_token * 2

    # -- one model evaluation --
    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},  # noqa: B006 (core's signature)
                     **kwargs):
        fusion: OviFusion = self.diffusion_model
        sigma = t
        timestep = self.model_sampling.timestep(t).float()  # 1000·σ, as Ovi's euler path
        exact = transformer_options.get(TIMESTEP_OPTION, None)
        if exact is not None:  # Ovi's unipc / dpm++ feed int64(1000·σ) (ovi_sampler below sets it per step)
            timestep = exact.reshape(1).to(x.device).expand(x.shape[0])
        latent_shapes = kwargs.get("latent_shapes", None)
        if latent_shapes is None or len(latent_shapes) != 2 or c_crossattn is None:
            raise OviInputError("Ovi needs the joint audio+video LATENT and a text CONDITIONING")
        dev = x.device  # the compute device (under lowvram some parameters stay in RAM: not fusion.device)

        # 1. text keys/values (cached), skip-layer guidance on core's unconditional rows
        ctx_v = c_crossattn.to(dev, torch.float32)
        ctx_a = kwargs.get("audio_crossattn", c_crossattn).to(dev, torch.float32)
        text = self.text_cache.get(fusion, ctx_v, ctx_a)
        slg_layer = int(transformer_options.get(SLG_OPTION, self.slg_layer))
        flags = transformer_options.get("cond_or_uncond", None)
        skip_mask = None
        if slg_layer > 0:
            if flags:
                skip_mask = torch.tensor([f == 1 for f in flags]).repeat_interleave(x.shape[0] // len(flags))
            else:
                slg_layer = 0  # no way to tell the negative rows: no SLG
            if skip_mask is not None and not bool(skip_mask.any()):
                slg_layer, skip_mask = 0, None

        # 2. the transformer on the packed latent [B, 1, N] -> packed velocities, through core's DIFFUSION_MODEL
        #    wrappers (what a model's diffusion_model.forward runs; core EasyCache hooks there and reads the packed
        #    input and output as one latent). A wrapper may change its input in place (EasyCache adds its cached
        #    difference to it): it gets a copy, x itself is needed for the denoised value below.
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                            transformer_options)
        xc = self.model_sampling.calculate_input(sigma, x).float()
        xc = xc.clone() if wrappers and xc.data_ptr() == x.data_ptr() else xc
        model_output = comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward_packed, self, wrappers).execute(
            xc, timestep, text, latent_shapes, kwargs.get("denoise_mask"), kwargs.get("audio_denoise_mask"),
            slg_layer, skip_mask, dev, transformer_options)

        # 3. denoised = x - σ·v
        return self.model_sampling.calculate_denoised(sigma, model_output.float().to(x.device), x)

    def _forward_packed(self, xc, timestep, text, latent_shapes, video_mask, audio_mask, slg_layer, skip_mask, dev,
                        transformer_options):
        """OviFusion.forward on the packed model input [B, 1, N] -> packed velocities [B, 1, N] (float32)."""
        # 1. unpack: video [B, 48, F, h, w], audio [B, 20, L] -> Ovi's channel-last [B, L, 20]
        video, audio = comfy.utils.unpack_latents(xc, latent_shapes)
        audio = audio.transpose(1, 2)

        # 2. per-modality timesteps from the denoise masks
        tv, clean_frames = _mask_timesteps(video_mask, timestep, "video")
        ta, clean_steps = _mask_timesteps(audio_mask, timestep, "audio")

        # 3. the forward (column 0 of tv / ta: the noisy part's timestep; a clean prefix runs at t = 0)
        out_v, out_a = self.diffusion_model(video, audio, tv[:, 0], text=text, slg_layer=slg_layer,
                                            skip_mask=skip_mask, audio_t=ta[:, 0], clean_video_frames=clean_frames,
                                            clean_audio_steps=clean_steps,
                                            fusion_cut=transformer_options.get(FUSION_CUT_OPTION, "none"), device=dev)

        # 4. pack the velocities
        return comfy.utils.pack_latents([out_v.float(), out_a.float().transpose(1, 2)])[0]


def _outer_sample_wrapper(executor, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None,
                          disable_pbar=False, seed=None, latent_shapes=None):
    """Around CFGGuider.outer_sample: give the model the latent shapes (process_latent_in/out, memory estimate;
    they stay set afterwards: SamplerCustomAdvanced calls process_latent_out on the packed x0 after sampling), drop
    the text cache afterwards, and return the kept (mask 0) elements exactly as they came in."""
    model = executor.class_obj.model_patcher.model
    model.latent_shapes = latent_shapes
    try:
        out = executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                       latent_shapes=latent_shapes)
    finally:
        model.text_cache.clear()
    if denoise_mask is not None:
        keep = denoise_mask.to(out.device) == 0
        out = torch.where(keep, latent_image.to(out.device, out.dtype), out)
    return out


def build_model_patcher(fusion: OviFusion, *, slg_layer: int = knobs.SLG_LAYER.default,
                        shift: float = knobs.SHIFT.default, load_device=None,
                        offload_device=None) -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI MODEL (ModelPatcher over OviAV) around an ovi_core OviFusion."""
    config = OviAVConfig(OviAVConfig.unet_config)  # BASE.__init__ keeps a copy of the dict it is given
    config.sampling_settings["shift"] = float(shift)
    load_device = load_device or comfy.model_management.get_torch_device()
    offload_device = offload_device or comfy.model_management.unet_offload_device()
    model = OviAV(config, fusion, slg_layer=slg_layer, device=offload_device)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample_wrapper)
    return patcher


# ---- latents, noise, sigmas ----------------------------------------------------------------------------------------
def empty_av_latent(video_frames: int, height: int, width: int, audio_steps: int, batch: int = 1) -> dict:
    """The joint LATENT of zeros: video [B, 48, F, H/16, W/16] (pass latent sizes), audio [B, 20, L]."""
    video = torch.zeros(batch, VIDEO_LATENT_CHANNELS, video_frames, height, width)
    audio = torch.zeros(batch, AUDIO_LATENT_CHANNELS, audio_steps)
    return {"samples": comfy.nested_tensor.NestedTensor((video, audio))}


class OviNoise:
    """A NOISE (SamplerCustomAdvanced) giving Ovi's own initial noise for a joint latent: per batch row, video and
    audio each from a CPU generator seeded with ``seed`` (ovi_core.sampler.make_noise), audio drawn channel-last."""

    def __init__(self, seed: int):
        self.seed = seed

    def generate_noise(self, input_latent: dict) -> comfy.nested_tensor.NestedTensor:
        video, audio = input_latent["samples"].unbind()
        vs, as_ = [], []
        for _ in range(video.shape[0]):
            v, a = make_noise(video.shape[1:], (audio.shape[2], audio.shape[1]), self.seed)
            vs.append(v)
            as_.append(a.transpose(0, 1))
        return comfy.nested_tensor.NestedTensor((torch.stack(vs), torch.stack(as_)))


def ovi_sigmas(solver: str, steps: int, shift: float = knobs.SHIFT.default) -> torch.Tensor:
    """Ovi's exact σ list for ``solver`` (unipc / euler / dpm++), float32, ending in 0: SIGMAS for core samplers."""

    return make_scheduler(solver, steps, shift).sigmas.to(torch.float32).clone()


class _OviSolverFunction:
    """A core sampler function running one of Ovi's own solvers (ovi_core.schedulers) on the packed latent: exactly
    Ovi's steps and model timesteps under any guider. Ovi's schedules only (``ovi_sigmas`` with the model's shift).

    One scheduler serves both modalities: the solvers are elementwise and Ovi's two schedules are identical."""

    def __init__(self, solver: str):
        self.solver = solver

    @torch.no_grad()
    def __call__(self, model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = {} if extra_args is None else extra_args
        shift = float(model.inner_model.inner_model.model_sampling.shift)
        steps = len(sigmas) - 1
        sched = make_scheduler(self.solver, steps, shift)
        ours = sched.sigmas.to(sigmas)
        if abs(float(sigmas[-1]) - 0.001) < 1e-6 and torch.allclose(ours[:-1], sigmas[:-1], rtol=0, atol=1e-6):
            # core's uni_pc sets the last σ to 0.001 *in place* in the SIGMAS it gets (comfy/extra_samplers/uni_pc.py),
            # i.e. in a scheduler node's cached output; core divides the result by 1 − σ_last after sampling: undo it
            sigmas[-1] = 0.0
        if not torch.allclose(ours, sigmas, rtol=0, atol=1e-6):
            raise OviInputError(f"Ovi's {self.solver} sampler runs on Ovi's {self.solver} σ list ({steps} steps, "
                                f"shift {shift:g}: Ovi Scheduler); got other sigmas")
        # Ovi starts from the plain noise even where σ_0 < 1 (unipc): undo core's noise scaling σ_0·ε + (1 − σ_0)·x0
        latent = getattr(model, "latent_image", None)
        s0 = sigmas[0]
        x = (x - (1.0 - s0) * latent) / s0 if latent is not None and s0 < 1 else x
        options = extra_args.setdefault("model_options", {}).setdefault("transformer_options", {})
        s_in = x.new_ones([x.shape[0]])
        try:
            for i in range(steps):
                options[TIMESTEP_OPTION] = sched.timesteps[i]
                denoised = model(x, sigmas[i] * s_in, **extra_args)
                if callback is not None:
                    callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
                velocity = (x - denoised) / sigmas[i]
                x = sched.step(velocity, x)
        finally:
            options.pop(TIMESTEP_OPTION, None)
        return x


def ovi_sampler(solver: str):
    """A SAMPLER (for SamplerCustomAdvanced) running Ovi's exact ``solver`` (unipc / euler / dpm++)."""
    return comfy.samplers.KSAMPLER(_OviSolverFunction(solver))


# ---- guidance ------------------------------------------------------------------------------------------------------
class OviGuider(comfy.samplers.CFGGuider):
    """Ovi's guidance as a core GUIDER: one positive and one negative pass per step, batched (the negative pass
    gives the video tower the video negative and the audio tower the audio negative, and skips the model's SLG
    block), then ``neg + cfg·(pos − neg)`` with its own cfg per modality, on the denoised estimates.

    Sync guidance (``sync_scale`` > 0): one more positive pass with the video↔audio fusion attention cut
    (``sync_cut``, ovi_core.knobs.SYNC_CUTS) and ``+ s·(pos − cut)`` on the modalities whose input was cut. On the
    denoised estimates this is the same as ``v + s·(v_pos − v_cut)`` on velocities (x0 = x − σ·v, one σ). 0 = off:
    no extra pass.

    The values are taken as given: its callers check them where they enter (the Ovi Guider node, Ovi Sampler)."""

    def __init__(self, model_patcher, video_cfg: float = knobs.VIDEO_GUIDANCE.default,
                 audio_cfg: float = knobs.AUDIO_GUIDANCE.default, sync_scale: float = knobs.SYNC_GUIDANCE.default,
                 sync_cut: str = knobs.SYNC_CUT.default):
        super().__init__(model_patcher)
        self.video_cfg, self.audio_cfg = float(video_cfg), float(audio_cfg)
        self.sync_scale, self.sync_cut = float(sync_scale), sync_cut

    def set_conds(self, positive, video_negative, audio_negative):
        """CONDITIONING lists; the audio negative's states ride in the video negative's entries."""
        audio = audio_negative[0][0]
        negative = [[c[0], {**c[1], AUDIO_CONTEXT_KEY: audio}] for c in video_negative]
        self.inner_set_conds({"positive": positive, "negative": negative})

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (core's signature)
        pos, neg = comfy.samplers.calc_cond_batch(self.inner_model, [self.conds["positive"], self.conds["negative"]],
                                                  x, timestep, model_options)
        shapes = self.inner_model.latent_shapes
        (pv, pa), (nv, na) = comfy.utils.unpack_latents(pos, shapes), comfy.utils.unpack_latents(neg, shapes)
        guided = [nv + self.video_cfg * (pv - nv), na + self.audio_cfg * (pa - na)]
        if self.sync_scale > 0:
            cut = self._cut_pass(x, timestep, model_options)
            for i, (p, c, push) in enumerate(zip((pv, pa), comfy.utils.unpack_latents(cut, shapes),
                                                 sync_targets(self.sync_cut))):
                if push:
                    guided[i] = guided[i] + self.sync_scale * (p - c)
        return comfy.utils.pack_latents(guided)[0]

    def _cut_pass(self, x, timestep, model_options):
        """The positive conditioning with the model's fusion attention cut (transformer_options FUSION_CUT_OPTION)."""
        options = {**model_options, "transformer_options": {**model_options.get("transformer_options", {}),
                                                           FUSION_CUT_OPTION: self.sync_cut}}
        return comfy.samplers.calc_cond_batch(self.inner_model, [self.conds["positive"]], x, timestep, options)[0]


# ---- LoRA ----------------------------------------------------------------------------------------------------------
# Core's LoraLoader / LoraLoaderModelOnly (comfy.sd.load_lora_for_models, and comfy.hooks) build the LoRA key map with
# comfy.lora.model_lora_keys_unet, which in ComfyUI 0.8 extends it per model class by isinstance checks only (no
# method a model can override). From the state-dict keys alone it already maps Ovi's own layout *with* the
# "diffusion_model." prefix and "lora_unet_video_model_blocks_N_..." names; ``lora_key_map`` adds the rest, and
# ``install_lora_support`` (run on import) wraps the two core functions so they use it for OviAV only.

# Wan2.2 diffusers names (WanTransformer3DModel) -> Wan's own names, which Ovi's video tower uses.
WAN_DIFFUSERS_NAMES = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o", "attn1.norm_q": "self_attn.norm_q", "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "attn2.norm_q": "cross_attn.norm_q", "attn2.norm_k": "cross_attn.norm_k",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2", "norm2": "norm3",
}
WAN_DIFFUSERS_TOP = {
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1", "proj_out": "head.head", "patch_embedding": "patch_embedding",
}
MODEL_PREFIX = "diffusion_model."
VIDEO_TOWER = "video_model."
LORA_FORMATS = ("Ovi (video_model.* / audio_model.*, with or without diffusion_model.)",
                "Wan2.2-TI2V-5B: diffusion_model.blocks.N.*, blocks.N.*, lora_unet_blocks_N_*, transformer.blocks.N.* "
                "(Wan or diffusers names), onto the video tower")


def _wan_diffusers_name(wan: str) -> str | None:
    """A Wan layer name (``blocks.3.self_attn.q``, ``head.head``) -> its diffusers name, or None."""
    parts = wan.split(".")
    if parts[0] == "blocks" and len(parts) > 2:
        rest = ".".join(parts[2:])
        for diff, own in WAN_DIFFUSERS_NAMES.items():
            if rest == own:
                return f"blocks.{parts[1]}.{diff}"
        return None
    for diff, own in WAN_DIFFUSERS_TOP.items():
        if wan == own:
            return diff
    return None


def lora_key_map(model_keys) -> dict[str, str]:
    """LoRA layer names -> OviAV state-dict keys, beyond what core derives from the keys themselves.

    ``model_keys``: OviAV state-dict keys (``diffusion_model.video_model.blocks.0.self_attn.q.weight``, ...). Adds
      * Ovi's layout without the prefix: ``video_model.blocks.0.self_attn.q`` / ``audio_model...`` (both towers);
      * Wan2.2-TI2V-5B LoRAs onto the video tower (Ovi's video tower is that DiT): ``diffusion_model.blocks.0...``,
        bare ``blocks.0...``, ``lora_unet_blocks_0_self_attn_q`` (+ ``.alpha``), ``transformer.blocks.0...`` with
        Wan's names or diffusers' (``transformer.blocks.0.attn1.to_q``), and ``lycoris_`` / ``lora_transformer_``.
    """
    out = {}
    for key in model_keys:
        if not key.startswith(MODEL_PREFIX):
            continue
        own = key[len(MODEL_PREFIX):]
        if not own.endswith(".weight"):  # parameters such as modulation (".diff" / ".set_weight" patches)
            out[own] = key
            if own.startswith(VIDEO_TOWER):  # Wan's blocks.N.modulation is Ovi's blocks.N.modulation.modulation
                wan = own[len(VIDEO_TOWER):].replace("modulation.modulation", "modulation")
                diff = wan.replace("head.modulation", "scale_shift_table").replace("modulation", "scale_shift_table")
                for name in (f"diffusion_model.{wan}", wan, f"transformer.{wan}", f"transformer.{diff}"):
                    out.setdefault(name, key)
            continue
        own = own[: -len(".weight")]
        out[own] = key  # Ovi layout, no prefix
        if not own.startswith(VIDEO_TOWER):
            continue
        wan = own[len(VIDEO_TOWER):]  # the Wan2.2 name of this video-tower layer
        names = [f"diffusion_model.{wan}", wan, f"transformer.{wan}"]
        flat = [f"lora_unet_{wan.replace('.', '_')}", f"lycoris_{wan.replace('.', '_')}"]
        if (diff := _wan_diffusers_name(wan)) is not None:
            names += [f"transformer.{diff}", f"diffusion_model.{diff}", diff]
            flat += [f"lora_transformer_{diff.replace('.', '_')}", f"lycoris_{diff.replace('.', '_')}"]
        for name in names + flat:
            out.setdefault(name, key)
    return out


class OviLoraKeys(dict):
    """The key map core built for an OviAV (marks it for the load summary)."""

    ovi_model = True


def _unmatched(lora: dict, key_map: dict) -> list[str]:
    """LoRA file keys that name no layer of the key map (no dotted prefix of the key is a mapped LoRA name)."""
    out = []
    for k in lora.keys():
        parts = k.split(".")
        names = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
        names += [n[: -len("_lora")] for n in names if n.endswith("_lora")]  # "<layer>_lora.up.weight"
        if not any(n in key_map for n in names):
            out.append(k)
    return out


def unpatchable_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys ComfyUI's ModelPatcher never patches: parameters of a module that also has sub-modules with
    parameters (ModelPatcher._load_list skips such modules — Ovi's and core Wan's ``head.modulation``)."""
    out = set()
    for name, module in model.named_modules():
        own = [p for p, _ in module.named_parameters(recurse=False)]
        if own and len(list(module.parameters())) > len(own):
            out.update(f"{name}.{p}" if name else p for p in own)
    return out


def _summarise_lora(lora: dict, key_map: dict, patches: dict) -> None:
    dropped = sorted(k for k in patches if isinstance(k, str) and k in getattr(key_map, "unpatchable", ()))
    for k in dropped:
        patches.pop(k)
    if dropped:
        logger.warning("Ovi LoRA: %d patches target parameters ComfyUI's model patcher does not patch (%s: held by a "
                       "module with sub-layers, as core Wan's head.modulation) and are left out", len(dropped),
                       ", ".join(k[len(MODEL_PREFIX):] for k in dropped))
    missed = _unmatched(lora, key_map)
    towers = {t: sum(1 for k in patches if str(k if isinstance(k, str) else k[0]).startswith(MODEL_PREFIX + t))
              for t in ("video_model.", "audio_model.")}
    if not patches:
        logger.warning("Ovi LoRA: none of the file's %d keys matches a layer of the Ovi model (%d unmatched) — it is "
                       "a LoRA for another model; the MODEL is left unchanged. Ovi takes: %s", len(lora), len(missed),
                       "; ".join(LORA_FORMATS))
        return
    logger.info("Ovi LoRA: %d layers patched (video tower %d, audio tower %d) from %d keys",
                len(patches), towers["video_model."], towers["audio_model."], len(lora))
    if missed:
        logger.warning("Ovi LoRA: %d of the file's %d keys match no layer of the Ovi model and were not loaded "
                       "(first: %s)", len(missed), len(lora), ", ".join(missed[:5]))


def install_lora_support() -> None:
    """Wrap comfy.lora.model_lora_keys_unet (adds a model's ``extra_lora_keys()``: OviAV's) and comfy.lora.load_lora
    (one summary line with the count of keys that matched nothing, after core's per-key warnings). Idempotent; other
    models pass through unchanged."""
    import comfy.lora

    if getattr(comfy.lora.model_lora_keys_unet, "_ovi_wrapped", False):
        return
    keys_unet, load_lora = comfy.lora.model_lora_keys_unet, comfy.lora.load_lora

    def model_lora_keys_unet(model, key_map={}):  # noqa: B006 (core's signature)
        key_map = keys_unet(model, key_map)
        extra = getattr(model, "extra_lora_keys", None)
        if extra is None:
            return key_map
        out = OviLoraKeys(key_map)
        for name, key in extra().items():
            out.setdefault(name, key)
        out.unpatchable = unpatchable_keys(model)
        return out

    def load_lora_(lora, to_load, log_missing=True):
        patches = load_lora(lora, to_load, log_missing=log_missing)
        if getattr(to_load, "ovi_model", False):
            _summarise_lora(lora, to_load, patches)
        return patches

    model_lora_keys_unet._ovi_wrapped = load_lora_._ovi_wrapped = True
    comfy.lora.model_lora_keys_unet, comfy.lora.load_lora = model_lora_keys_unet, load_lora_


install_lora_support()
