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


def detached_copy(weight, *args, **kwargs):
    """The weight function Steer's clones use: comfy.ops' per-forward copy of the weight, cut from the loaded
    parameter. Loader weights have requires_grad=True, so without the cut a backward() would accumulate gradients
    into the upstream model's own parameters (memory the size of the model, and a change to a shared object)."""
    return weight.detach()


def differentiable_clone(patcher, prefix: str = "", wrapper=None):
    """A clone of `patcher` whose layers re-materialise their weights on every forward.

    Loader nodes build weights under inference mode, and autograd refuses to save inference
    tensors for backward. A weight wrapper makes comfy.ops copy each weight into a normal tensor
    per forward (cast_bias_weight(copy=True)), as ComfyUI's own nodes_train does; the wrapper,
    `detached_copy`, cuts that copy from the loaded parameter.
    Parameters of layers that are not comfy.ops layers (the `scale` of Flux's and Chroma's QK
    RMSNorms) have no weight function; the clone carries normal-tensor copies of those as object
    patches, which ComfyUI sets when the clone loads and takes back when it unloads.
    The upstream patcher is untouched: wrappers and patches live on the clone only.

    `wrapper(key)`, if given, returns the function for the parameter `key` (e.g.
    "diffusion_model.input_blocks.1.1.proj_in.weight") instead of `detached_copy`; the trainer
    uses it to swap trainable weights in.
    """
    clone = patcher.clone()
    for name, module in patcher.model.named_modules():
        if not name.startswith(prefix):
            continue
        if not hasattr(module, "weight_function"):
            for key, parameter in module.named_parameters(prefix=name, recurse=False):
                if parameter.is_inference():
                    clone.add_object_patch(key, normal_copy(parameter))
            continue
        for kind in ("weight", "bias"):
            if getattr(module, kind, None) is not None:
                key = f"{name}.{kind}"
                clone.add_weight_wrapper(key, detached_copy if wrapper is None else wrapper(key))
    return clone


def normal_copy(parameter: torch.nn.Parameter) -> torch.nn.Parameter:
    """A frozen copy of an inference-mode parameter that autograd may save."""
    with torch.inference_mode(False):
        return torch.nn.Parameter(parameter.detach().clone(), requires_grad=False)


@contextmanager
def weights_rematerialised(model: torch.nn.Module):
    """`detached_copy` weight/bias functions on every comfy.ops layer of `model` (no patcher to clone,
    as for CLIP vision), removed on exit. Lists are replaced, never appended to: ComfyUI's
    class-level default list is shared by every layer of every model."""

    def changes():
        for module in model.modules():
            if hasattr(module, "weight_function"):
                for attribute in ("weight_function", "bias_function"):
                    yield module, attribute, [*getattr(module, attribute), detached_copy]

    with patched_attributes(changes()):
        yield


def unet_checkpoint_blocks(diffusion_model: torch.nn.Module) -> list[torch.nn.Module]:
    """The residual and transformer blocks of ComfyUI's SD UNet (openaimodel.UNetModel: SD1, SD2, SDXL)."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    return blocks_of(diffusion_model, (ResBlock, SpatialTransformer))


def _in_place_block_types() -> tuple[type, ...]:
    """DiT blocks that add residuals in place into tensors their norms saved (see guidance/checkpointing.py)."""
    import comfy.ldm.chroma.layers as chroma
    import comfy.ldm.flux.layers as flux

    return (flux.DoubleStreamBlock, flux.SingleStreamBlock, chroma.DoubleStreamBlock, chroma.SingleStreamBlock)


def model_blocks(diffusion_model: torch.nn.Module) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    """(the blocks gradient checkpointing wraps, the blocks that add in place) of a ComfyUI diffusion model:
    the SD UNet's residual and transformer blocks, SD3's MMDiT joint blocks, Flux's and Chroma's double-
    and single-stream blocks. Other architectures get none: they run, without checkpointing."""
    from comfy.ldm.modules.diffusionmodules.mmdit import JointBlock

    in_place_types = _in_place_block_types()
    blocks = unet_checkpoint_blocks(diffusion_model) + blocks_of(diffusion_model, (JointBlock, *in_place_types))
    return blocks, [block for block in blocks if isinstance(block, in_place_types)]


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


def out_of_place_clip_layers(encoder: torch.nn.Module) -> list[tuple]:
    """The (layer, "forward", out-of-place forward) changes, for patching.AttributePatch, that make every
    CLIPLayer of `encoder` add its residuals out of place: instance attributes on those layers only
    (the class is untouched, so other encoders are not affected)."""
    return [
        (module, "forward", types.MethodType(out_of_place_clip_layer, module))
        for module in encoder.modules()
        if isinstance(module, comfy.clip_model.CLIPLayer)
    ]


def image_to_bchw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, C) → (B, C, H, W), RGB only."""
    return image[..., :3].movedim(-1, 1)
