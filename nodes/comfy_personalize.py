"""ComfyUI backend for AttnDreamBooth: personalize/backbone.py over ComfyUI's MODEL, CLIP and VAE,
running ComfyUI's own model code (no conversion to diffusers).

Every ComfyUI quirk training meets is handled here, one function each, in our scope only:

- Prompts run under torch.inference_mode() and loader weights are inference tensors. The node
  calls everything inside `torch.inference_mode(False)`; weights reach autograd through weight
  wrappers on *clones* of the patchers (`differentiable_clone`), never on the upstream MODEL/CLIP.
- Trainable weights: every UNet weight and bias a stage of the plan trains (all of them with
  stage 3, the cross-attention ones without it) gets a wrapper that hands the layer our float32
  nn.Parameter instead of its own (possibly fp16, LoRA-patched) weight; the others get comfy.ops'
  per-forward copy, detached. The parameters start as exact copies of the weights ComfyUI
  loaded, so upstream LoRAs are part of the base model.
- The new token (one float32 vector per text encoder: CLIP-L and CLIP-G on SDXL) and the CLIP's
  in-place residuals: comfy_personalize_text.py.
- Cross-attention capture: `set_model_attn2_replace` on every block with an attn2 layer of the
  training clone, computing softmax(QKᵀ/√d) explicitly (float32) and handing the probabilities
  to `capture.record`. Self-attention keeps ComfyUI's fused kernel.
- The noise schedule: ᾱ_t = 1 / (1 + σ_t²) from the MODEL's (possibly patched) model_sampling;
  ε or v by its type. The UNet is called directly with the DDPM-scaled x_t and the integer t,
  which is what BaseModel.apply_model computes from (x0 + σ·ε, σ). On SDXL it also takes `y`,
  the model's own `encode_adm` of CLIP-G's pooled vector and the latent's image size, uncropped
  (what ComfyUI's samplers pass for a latent of that size).
- Memory: `load_models_gpu(..., force_full_load=True)` for the UNet and CLIP clones (training
  activations are not in ComfyUI's estimate, so partial loading would copy weights per forward);
  gradient checkpointing by instance-level forward wrappers on every ResBlock and
  SpatialTransformer, removed again by `set_gradient_checkpointing(False)` / `close()`.
- VAE: the latent distribution (mean, std) of each distinct training view is computed once and
  cached; every sample draws a fresh latent from it (the official code samples the posterior).
  With a pool of augmented views (TrainingImages(views_per_image=K)) the whole pool is encoded
  up front by `cache_latents`, before the UNet is loaded for training.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from typing import Iterable, Sequence

import comfy.model_management
import torch
from comfy.ldm.modules.attention import SpatialTransformer

from ..errors import SteerError
from ..guidance.checkpointing import checkpointed
from ..patching import AttributePatch
from ..personalize.backbone import EncodedPrompt, TextConditioning
from ..personalize.latent_cache import DEFAULT_BUDGET_BYTES, LatentCache, sample_latents
from ..personalize.regularizer import AttentionCapture, capturing_attention, merge_heads, split_heads
from ..personalize.stages import CROSS_ATTENTION, PARAMETER_GROUPS, TOKEN, UNET
from .comfy_common import detached_copy, differentiable_clone, unet_checkpoint_blocks
from .comfy_personalize_text import ComfyPromptEncoder
from .comfy_trainable import check_supported, is_sdxl, noise_schedule_of, text_encoders

log = logging.getLogger("steer")

UNET_PREFIX = "diffusion_model."


# --------------------------------------------------------------------------------------------
# The in-scope patches


def capturing_attn2(capture: AttentionCapture):
    """An attn2 replace patch: attention with explicit float32 softmax probabilities, handed to
    `capture` (personalize.regularizer.capturing_attention). The block applies to_q/to_k/to_v before
    and to_out after, so this is the whole of ComfyUI's optimized_attention for cross-attention."""

    def attn2(q, k, v, extra_options):
        heads = extra_options["n_heads"]
        qh, kh, vh = (split_heads(t, heads) for t in (q, k, v))
        return merge_heads(capturing_attention(qh, kh, vh, capture, (q.shape[-1] // heads) ** -0.5)).to(q.dtype)

    return attn2


def attn2_blocks(diffusion_model: torch.nn.Module) -> list[tuple[str, int]]:
    """The (block name, number) keys of every UNet block holding a SpatialTransformer with attn2."""
    keys = []
    for block_name, blocks in (
        ("input", diffusion_model.input_blocks),
        ("middle", [diffusion_model.middle_block]),
        ("output", diffusion_model.output_blocks),
    ):
        for number, block in enumerate(blocks):
            if block is not None and any(isinstance(m, SpatialTransformer) for m in block.modules()):
                keys.append((block_name, number))
    return keys


class _TrainableWeight:
    """A weight wrapper that gives the layer our float32 parameter instead of its own weight (cast
    to the dtype and device comfy.ops asked for, which keeps the graph back to the parameter)."""

    __slots__ = ("parameter",)

    def __init__(self):
        self.parameter: torch.nn.Parameter | None = None

    def __call__(self, weight, *args, **kwargs):
        parameter = self.parameter
        if parameter is None:  # a weight this run does not train, or after close(): comfy.ops' copy of the loaded weight
            return detached_copy(weight)
        return parameter.to(device=weight.device, dtype=weight.dtype)


def weights_signature(modules: Iterable[torch.nn.Module]) -> str:
    """A cheap content hash of loaded weights: names, shapes and 64 evenly spaced values of every
    tensor. Two different checkpoints (or LoRA-patched versions) practically never collide."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for module in modules:
            for name, tensor in module.state_dict().items():
                if not isinstance(tensor, torch.Tensor):
                    continue
                flat = tensor.detach().reshape(-1)
                sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu()
                digest.update(f"{name}{tuple(tensor.shape)}".encode())
                digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# The backbone


class ComfyBackbone:
    """personalize.backbone.Backbone over ComfyUI objects.

        backbone = ComfyBackbone(model, clip, vae)      # validates, loads nothing
        with torch.inference_mode(False), torch.enable_grad():
            backbone.cache_latents(images.all_views())  # optional: encode the view pool once
            with backbone:                              # loads clones, installs in-scope patches
                result = train(backbone, images, ...)
                concept = concept_from_backbone(backbone, result)

    The upstream MODEL, CLIP and VAE objects are never changed: training runs on patcher clones
    and every patch on a shared module is removed on exit.
    """

    def __init__(
        self, model, clip, vae, *, latent_cache_bytes: int = DEFAULT_BUDGET_BYTES, trained_groups: Iterable[str] = PARAMETER_GROUPS
    ):
        check_supported(model, clip, vae)
        # Which parameter groups the plan trains: UNet weights get float32 trainable copies only if a stage trains
        # them (all of them for stage 3, the cross-attention ones for stage 2); the rest run on ComfyUI's own weights.
        self._trained_groups = frozenset(trained_groups)
        self._model, self._clip, self._vae = model, clip, vae
        self._base = model.model
        self._diffusion_model = self._base.diffusion_model
        self.is_sdxl = is_sdxl(model)
        self._text = ComfyPromptEncoder(clip, text_encoders(model, clip), pooled=self.is_sdxl)
        model_sampling = model.get_model_object("model_sampling")
        self.schedule = noise_schedule_of(model_sampling)
        self._sigmas = model_sampling.sigmas.detach().float().cpu()
        self.device = torch.device(model.load_device)
        self.architecture = type(self._base.model_config).__name__  # "SD15", "SD20", "SDXL", "SSD1B"...
        self.identity = f"comfyui-{self.architecture}"  # completed from the weights by open()

        self._wrappers: dict[str, _TrainableWeight] = {}
        self._unet = None  # the training clone of the MODEL's patcher
        self._clip_patcher = None  # a differentiable clone of the CLIP's patcher
        self._parameters: dict[str, torch.nn.Parameter] = {}
        self._groups = None
        self._checkpointed = AttributePatch()
        self._latents = LatentCache(latent_cache_bytes)
        self._vae_signature: str | None = None

    # --- lifetime ----------------------------------------------------------------------------

    def __enter__(self) -> "ComfyBackbone":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Clone, load and wrap the UNet and CLIP, create the float32 trainable parameters."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError("ComfyBackbone must be opened inside torch.inference_mode(False) (ComfyUI runs nodes in inference mode)")
        if self._unet is not None:
            return
        try:
            self._open()
        except BaseException:
            self.close()  # a failed open leaves nothing patched either
            raise

    def _open(self) -> None:
        self._wrappers = {}

        def trainable(key: str) -> _TrainableWeight:
            wrapper = _TrainableWeight()
            self._wrappers[key[len(UNET_PREFIX) :]] = wrapper
            return wrapper

        self._unet = differentiable_clone(self._model, prefix=UNET_PREFIX, wrapper=trainable)
        self._clip_patcher = differentiable_clone(self._clip.patcher)
        self._load_training_models()

        low_precision = sorted({str(p.dtype) for p in self._diffusion_model.parameters() if p.dtype.itemsize == 1})
        if low_precision:
            raise SteerError(
                f"this model's UNet weights are stored as {', '.join(low_precision)}; training needs them in fp16, bf16 or fp32. "
                "Load the checkpoint with weight_dtype 'default'"
            )
        missing = sorted(name for name, _ in self._diffusion_model.named_parameters() if name not in self._wrappers)
        if missing:
            raise SteerError(f"this UNet has parameters outside ComfyUI's weight-wrappable layers ({missing[:3]}...); it cannot be trained")
        with torch.no_grad():
            for name, parameter in self._diffusion_model.named_parameters():
                if UNET not in self._trained_groups and not (CROSS_ATTENTION in self._trained_groups and ".attn2." in name):
                    continue  # never trained: the layer keeps ComfyUI's weight (comfy.ops copies it per forward)
                # Exactly the weight ComfyUI loaded (upstream LoRA patches included), in float32.
                trainable_copy = torch.nn.Parameter(parameter.detach().to(self.device, torch.float32, copy=True), requires_grad=False)
                self._parameters[name] = trainable_copy
                self._wrappers[name].parameter = trainable_copy
        self._text.open()
        self._groups = {
            TOKEN: self._text.parameters(),
            CROSS_ATTENTION: {name: p for name, p in self._parameters.items() if ".attn2." in name},
            UNET: dict(self._parameters),
        }
        signature = weights_signature([self._diffusion_model, *(encoder.encoder for encoder in self._text.encoders)])
        if self._vae_signature is None:
            self._vae_signature = weights_signature([self._vae.first_stage_model])
        self.identity = f"comfyui-{self.architecture}-{hashlib.sha256((signature + self._vae_signature).encode()).hexdigest()[:24]}"

    def close(self) -> None:
        """Remove every in-scope patch and release the trainable weights (after export)."""
        self.set_gradient_checkpointing(False)
        self._text.close()
        for wrapper in self._wrappers.values():
            wrapper.parameter = None
        self._parameters = {}
        self._groups = None
        self._unet = None
        self._clip_patcher = None
        comfy.model_management.soft_empty_cache()

    def _load_training_models(self) -> None:
        # memory_required=1e20 evicts every other model first, as ComfyUI's own trainer does:
        # ComfyUI's estimate covers inference only, not training activations.
        comfy.model_management.load_models_gpu([self._unet, self._clip_patcher], memory_required=1e20, force_full_load=True)

    def _require_open(self) -> None:
        if self._unet is None:
            raise RuntimeError("ComfyBackbone is not open: use `with backbone:` around training")

    # --- parameters -------------------------------------------------------------------------

    def parameter_groups(self):
        self._require_open()
        return self._groups

    def reset_token(self, category: str) -> None:
        self._text.reset(category)

    def token_embeddings(self) -> dict[str, torch.Tensor]:
        return self._text.embeddings()

    def unet_weight_deltas(self) -> dict[str, torch.Tensor]:
        """trained − loaded weight; the clone is (re)loaded first, so the base is exactly the weight
        the parameters were copied from."""
        self._require_open()
        self._load_training_models()
        deltas = {}
        with torch.no_grad():
            for name, base in self._diffusion_model.named_parameters():
                if name not in self._parameters:
                    continue  # not trainable in this run
                delta = self._parameters[name].detach() - base.detach().to(self.device, torch.float32)
                if delta.any():
                    deltas[name] = delta.cpu()
        return deltas

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled and not self._checkpointed:
            self._checkpointed.apply(checkpointed(unet_checkpoint_blocks(self._diffusion_model)))
        elif not enabled:
            self._checkpointed.restore()

    # --- text --------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> EncodedPrompt:
        self._require_open()
        tokens, token_index = self._text.prompt_tokens(prompt)
        embeddings, pooled = self._text.encode_tokens(tokens)
        return EncodedPrompt(
            embeddings=embeddings.to(self.device, torch.float32),
            pooled=None if pooled is None else pooled.to(self.device, torch.float32),
            token_index=token_index,
            category_index=token_index + 1,
        )

    @torch.no_grad()
    def encode_text(self, prompt: str) -> TextConditioning:
        self._require_open()
        embeddings, pooled = self._text.encode_plain(prompt)
        return TextConditioning(
            embeddings.to(self.device, torch.float32), None if pooled is None else pooled.to(self.device, torch.float32)
        )

    # --- images -------------------------------------------------------------------------------

    def latent_shape(self, size: int) -> tuple[int, int, int]:
        factor = self._vae.downscale_ratio
        return (self._vae.latent_channels, size // factor, size // factor)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        images = self._vae.decode(self._base.latent_format.process_out(latents.float()))  # (B, H, W, 3) in [0, 1]
        self._load_training_models()  # loading the VAE may have moved the training clones off the GPU
        return images.movedim(-1, 1).float().clamp(0, 1).cpu()

    def cache_latents(self, views: Iterable[torch.Tensor], batch_size: int = 8) -> int:
        """Encode these (3, H, W) views in [-1, 1] now (e.g. TrainingImages.all_views()); returns
        how many were new. Call before opening, so the VAE and the UNet need not be resident together."""
        return self._latents.fill(
            views, self._latent_distribution, batch_size, before_batch=comfy.model_management.throw_exception_if_processing_interrupted
        )

    @torch.no_grad()
    def _latent_distribution(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE posterior N(mean, std²) of (B, 3, H, W) pixels in [-1, 1], float32 on the CPU.
        VAE.encode returns only the mode, so the encoder (and quant_conv) run directly."""
        vae = self._vae
        comfy.model_management.load_models_gpu([vae.patcher])
        if self._vae_signature is None:
            self._vae_signature = weights_signature([vae.first_stage_model])
        first_stage = vae.first_stage_model
        moments = first_stage.encoder(pixels.to(vae.device, vae.vae_dtype))
        if hasattr(first_stage, "quant_conv"):
            moments = first_stage.quant_conv(moments)
        moments = moments.float()
        if moments.shape[1] != 2 * vae.latent_channels:
            raise SteerError(
                f"this VAE's encoder gives {moments.shape[1]} channels, not a Gaussian posterior over {vae.latent_channels}; use "
                "the checkpoint's own VAE"
            )
        if not torch.isfinite(moments).all():
            # SDXL's original VAE overflows in fp16; training on such latents would only fail later, as a NaN loss.
            raise SteerError(
                f"the VAE encoded the photos to NaN or infinite values in {str(vae.vae_dtype).removeprefix('torch.')} (SDXL's "
                "original VAE overflows in fp16); start ComfyUI with --bf16-vae or --fp32-vae, or load the fp16-fixed SDXL VAE"
            )
        mean, log_variance = moments.chunk(2, dim=1)
        std = torch.exp(0.5 * log_variance.clamp(-30.0, 20.0))
        if self._unet is not None:  # mid-training cache miss: make sure the training models are back
            self._load_training_models()
        return mean.cpu(), std.cpu()

    def encode_images(self, pixels: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        mean, std = self._latents.distribution(pixels, self._latent_distribution)
        latents = self._base.latent_format.process_in(sample_latents(mean, std, generators))
        return latents.to(self.device, torch.float32)

    # --- the UNet ---------------------------------------------------------------------------

    def predict_noise(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text_embeddings: torch.Tensor, pooled: torch.Tensor | None = None
    ) -> torch.Tensor:
        self._require_open()
        # A fresh copy each call: the UNet writes "block", "original_shape"... into it.
        options = dict(self._unet.model_options.get("transformer_options", {}))
        options["cond_or_uncond"] = [0]
        options["sigmas"] = self._sigmas[timesteps.cpu().long()].to(self.device)
        x = noisy_latents.to(self.device, torch.float32)
        context = text_embeddings.to(self.device, torch.float32)
        extra = {}
        if self.is_sdxl:
            if pooled is None:
                raise ValueError("SDXL needs the pooled text vector (EncodedPrompt.pooled)")
            height, width = (side * self._vae.downscale_ratio for side in x.shape[-2:])
            y = self._base.encode_adm(pooled_output=pooled.to(self.device, torch.float32), width=width, height=height)
            extra["y"] = y.to(self.device, torch.float32)
        output = self._diffusion_model(x, timesteps.to(self.device).float(), context=context, transformer_options=options, **extra)
        return output.float()

    def attention_capture(self, capture: AttentionCapture):
        """Cross-attention through Steer's capturing patch; self-attention keeps its fused kernel."""
        return self.attention_replaced(attn2=capturing_attn2(capture))

    @contextmanager
    def attention_replaced(self, attn1=None, attn2=None):
        """ComfyUI attention replace patches on every transformer block of the training clone, for
        the span of the block (the clone's previous transformer_options come back afterwards)."""
        self._require_open()
        patcher = self._unet
        saved = patcher.model_options.get("transformer_options", {})
        for block_name, number in attn2_blocks(self._diffusion_model):
            if attn1 is not None:
                patcher.set_model_attn1_replace(attn1, block_name, number)
            if attn2 is not None:
                patcher.set_model_attn2_replace(attn2, block_name, number)
        try:
            yield
        finally:
            patcher.model_options["transformer_options"] = saved
