"""What every Steer adapter needs from ComfyUI, written once: gradients through loader weights
(inference tensors), the block lists gradient checkpointing wraps, CLIP layers without in-place
residuals, and ComfyUI's IMAGE layout.
"""

from __future__ import annotations

import types
from contextlib import contextmanager

import comfy.clip_model
import torch

from ..guidance.checkpointing import blocks_of
from ..patching import patched_attributes


def _identity(weight, *args, **kwargs):
    return weight


def differentiable_clone(patcher, prefix: str = "", wrapper=None):
    """A clone of `patcher` whose layers re-materialise their weights on every forward.

    Loader nodes build weights under inference mode, and autograd refuses to save inference
    tensors for backward. An identity weight wrapper makes comfy.ops copy each weight into a
    normal tensor per forward (cast_bias_weight(copy=True)), as ComfyUI's own nodes_train does.
    The upstream patcher is untouched: wrappers live on the clone only.

    `wrapper(key)`, if given, returns the function for the parameter `key` (e.g.
    "diffusion_model.input_blocks.1.1.proj_in.weight") instead of the identity; the trainer
    uses it to swap trainable weights in.
    """
    clone = patcher.clone()
    for name, module in patcher.model.named_modules():
        if not name.startswith(prefix) or not hasattr(module, "weight_function"):
            continue
        for kind in ("weight", "bias"):
            if getattr(module, kind, None) is not None:
                key = f"{name}.{kind}"
                clone.add_weight_wrapper(key, _identity if wrapper is None else wrapper(key))
    return clone


@contextmanager
def weights_rematerialised(model: torch.nn.Module):
    """Identity weight/bias functions on every comfy.ops layer of `model` (no patcher to clone,
    as for CLIP vision), removed on exit. Lists are replaced, never appended to: ComfyUI's
    class-level default list is shared by every layer of every model."""

    def changes():
        for module in model.modules():
            if hasattr(module, "weight_function"):
                for attribute in ("weight_function", "bias_function"):
                    yield module, attribute, [*getattr(module, attribute), _identity]

    with patched_attributes(changes()):
        yield


def unet_checkpoint_blocks(diffusion_model: torch.nn.Module) -> list[torch.nn.Module]:
    """The residual and transformer blocks of ComfyUI's SD UNet (openaimodel.UNetModel)."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    return blocks_of(diffusion_model, (ResBlock, SpatialTransformer))


def vae_decoder_checkpoint_blocks(first_stage_model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder's ResNet blocks of ComfyUI's KL autoencoder; none for other decoders (TAESD is small)."""
    from comfy.ldm.modules.diffusionmodules.model import ResnetBlock

    decoder = getattr(first_stage_model, "decoder", None)
    return blocks_of(decoder, (ResnetBlock,)) if decoder is not None else []


def out_of_place_clip_layer(layer, x, mask=None, optimized_attention=None):
    """comfy.clip_model.CLIPLayer.forward with `x = x + ...` instead of `x += ...`, so autograd
    keeps the residual inputs it saved (same maths)."""
    x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
    return x + layer.mlp(layer.layer_norm2(x))


def out_of_place_clip_layers(encoder: torch.nn.Module):
    """A scope in which every CLIPLayer of `encoder` runs the out-of-place forward: an instance
    attribute on those layers only (the class is untouched, so other encoders are not affected)."""
    return patched_attributes(
        (module, "forward", types.MethodType(out_of_place_clip_layer, module))
        for module in encoder.modules()
        if isinstance(module, comfy.clip_model.CLIPLayer)
    )


def image_to_bchw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, C) → (B, C, H, W), RGB only."""
    return image[..., :3].movedim(-1, 1)
