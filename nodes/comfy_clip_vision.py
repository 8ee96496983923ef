"""ComfyUI adapter: a stock CLIP_VISION model (CLIPVisionLoader) as a differentiable image encoder.

Three things stop gradients through ComfyUI's CLIP vision, each handled here, in our scope only:
1. `clip_preprocess` rounds pixels to 8-bit levels (zero gradient): we use the engine's
   ImagePreprocess (interpolate + normalise) with the model's own size, mean and std.
2. Weights are inference tensors, which autograd refuses to save for backward: while our
   forward runs, every comfy.ops layer gets an identity weight function, which makes
   cast_bias_weight copy the weight into a normal tensor (as nodes_train's wrappers do).
   The layers' previous weight-function lists are put back on exit, even on error.
3. `CLIPLayer.forward` adds residuals in place (`x += ...`), which breaks backward: we walk the
   tower ourselves with out-of-place residuals, calling the layers' submodules. CLIPLayer itself
   is never patched, so no other node can observe a change, even from another thread.

The walk also stops at the requested block, so a style loss on block 2 of a 24-block ViT-L pays
for 3 blocks, not 24.
"""

from __future__ import annotations

import contextlib

import comfy.clip_model
import comfy.model_management
import torch
from comfy.ldm.modules.attention import optimized_attention_for_device

from ..errors import SteerError
from ..guidance.preprocess import FITS, ImagePreprocess
from .comfy_common import out_of_place_clip_layer, weights_rematerialised


@contextlib.contextmanager
def differentiable_scope(clip_vision, needs_grad: bool):
    """Load the model as ComfyUI would, then run our forward outside inference mode on
    re-materialised weights. Backward may run after the scope: it only needs the saved copies."""
    with torch.inference_mode(True):
        comfy.model_management.load_model_gpu(clip_vision.patcher)
    grad_mode = torch.enable_grad() if needs_grad else torch.no_grad()
    with torch.inference_mode(False), grad_mode, weights_rematerialised(clip_vision.model):
        yield


class ComfyCLIPVisionEncoder:
    """An ImageEncoder (see guidance/losses/clip.py) over a stock CLIP_VISION object."""

    def __init__(self, clip_vision, fit: str = "stretch", name: str = "CLIP_VISION"):
        model = getattr(clip_vision, "model", None)
        if not isinstance(model, comfy.clip_model.CLIPVisionModelProjection):
            raise SteerError(
                f"this CLIP_VISION model is a {type(model).__name__}, not a CLIP or SigLIP vision transformer; "
                "Steer's image and style losses need a CLIP vision model (e.g. the ViT-H or ViT-L ones IPAdapter uses)"
            )
        if fit not in FITS:
            raise SteerError(f"fit must be one of {FITS}, got {fit!r}")
        self.clip_vision = clip_vision
        self.vision = model.vision_model
        self.projection = model.visual_projection
        self.num_blocks = len(self.vision.encoder.layers)
        self.embed_dim = int(self.projection.weight.shape[0])
        size = int(clip_vision.image_size)
        self.preprocess = ImagePreprocess(
            size=(size, size), mean=tuple(clip_vision.image_mean), std=tuple(clip_vision.image_std), resample="bicubic", fit=fit
        )
        self.has_class_token = getattr(self.vision.embeddings, "class_embedding", None) is not None
        self.name = name

    def _walk(self, images: torch.Tensor, stop_after: int | None) -> torch.Tensor:
        device = self.clip_vision.load_device
        pixels = self.preprocess(images.to(device=device, dtype=torch.float32))  # float32 as encode_image does; comfy.ops casts the weights
        x = self.vision.pre_layrnorm(self.vision.embeddings(pixels))
        attention = optimized_attention_for_device(x.device, mask=False, small_input=True)
        for index, layer in enumerate(self.vision.encoder.layers):
            x = out_of_place_clip_layer(layer, x, None, attention)
            if index == stop_after:
                break
        return x

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        with differentiable_scope(self.clip_vision, images.requires_grad):
            x = self._walk(images, stop_after=None)
            if self.vision.output_layernorm:  # SigLIP: no class token; the mean final token stands in for the pooled one
                pooled = self.vision.post_layernorm(x).mean(dim=1)
            else:
                pooled = self.vision.post_layernorm(x[:, 0, :])
            return self.projection(pooled).float().to(images.device)

    def block_tokens(self, images: torch.Tensor, block: int) -> torch.Tensor:
        if not 0 <= block < self.num_blocks:
            raise SteerError(f"block must be between 0 and {self.num_blocks - 1} for this CLIP vision model, got {block}")
        with differentiable_scope(self.clip_vision, images.requires_grad):
            x = self._walk(images, stop_after=block)
            tokens = x[:, 1:] if self.has_class_token else x
            return tokens.float().to(images.device)
