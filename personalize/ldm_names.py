"""diffusers UNet2DConditionModel parameter names -> the original LDM (CompVis/Stability)
names that ComfyUI uses under "diffusion_model.", for SD1.x/SD2.x-style UNets.

The LDM UNet is one flat list of input blocks, a middle block and a flat list of output
blocks; diffusers nests the same modules as down/mid/up blocks. Walking diffusers' blocks in
order and counting gives the LDM index of each module:

    conv_in                          input_blocks.0.0
    down_blocks.d.resnets.r          input_blocks.n.0     n counts resnets and downsamplers from 1
    down_blocks.d.attentions.r       input_blocks.n.1     (same n as its resnet)
    down_blocks.d.downsamplers.0     input_blocks.n.0.op  (the conv, named `op`)
    mid_block.resnets.0/attentions.0/resnets.1   middle_block.0/1/2
    up_blocks.u.resnets.r            output_blocks.m.0    m counts resnets from 0
    up_blocks.u.attentions.r         output_blocks.m.1
    up_blocks.u.upsamplers.0         output_blocks.m.1 or .2 (after the attention, if any)
    conv_norm_out / conv_out         out.0 / out.2
    time_embedding.linear_1/2        time_embed.0/2

Inside a resnet the layers are renamed (ResNet sub-layer table below); inside a transformer
(attention) block every name is the same in both. ComfyUI reads the same correspondence in
comfy.utils.unet_to_diffusers; this is an independent derivation from the module tree,
checked against that function's output in tests/unit/test_personalize_ldm_names.py.
"""

from __future__ import annotations

import torch

from ..errors import SteerError

RESNET_LAYERS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

TOP_LEVEL_LAYERS = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL-style pooled/size conditioning
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _module_prefixes(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix, for every block-level module."""
    prefixes: dict[str, str] = {}

    index = 1
    for d, block in enumerate(unet.down_blocks):
        attentions = getattr(block, "attentions", None)
        for r in range(len(block.resnets)):
            prefixes[f"down_blocks.{d}.resnets.{r}"] = f"input_blocks.{index}.0"
            if attentions is not None:
                prefixes[f"down_blocks.{d}.attentions.{r}"] = f"input_blocks.{index}.1"
            index += 1
        if getattr(block, "downsamplers", None) is not None:
            prefixes[f"down_blocks.{d}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1

    mid = unet.mid_block
    if mid is not None:
        prefixes["mid_block.resnets.0"] = "middle_block.0"
        if getattr(mid, "attentions", None) is not None:
            prefixes["mid_block.attentions.0"] = "middle_block.1"
            prefixes["mid_block.resnets.1"] = "middle_block.2"

    index = 0
    for u, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        resnet_count = len(block.resnets)
        for r in range(resnet_count):
            prefixes[f"up_blocks.{u}.resnets.{r}"] = f"output_blocks.{index}.0"
            if attentions is not None:
                prefixes[f"up_blocks.{u}.attentions.{r}"] = f"output_blocks.{index}.1"
            if r == resnet_count - 1 and getattr(block, "upsamplers", None) is not None:
                slot = 2 if attentions is not None else 1
                prefixes[f"up_blocks.{u}.upsamplers.0.conv"] = f"output_blocks.{index}.{slot}.conv"
            index += 1

    prefixes.update(TOP_LEVEL_LAYERS)
    return prefixes


def _resnet_layer(rest: str) -> str:
    layer, _, parameter = rest.rpartition(".")
    if layer not in RESNET_LAYERS:
        raise KeyError(layer)
    return f"{RESNET_LAYERS[layer]}.{parameter}"


def diffusers_to_ldm_names(unet: torch.nn.Module) -> dict[str, str]:
    """{diffusers parameter name: LDM parameter name} for every parameter of `unet`
    (works on a meta-device model). Raises SteerError for a layout it does not know."""
    if not all(hasattr(unet, attribute) for attribute in ("down_blocks", "up_blocks", "mid_block")):
        raise SteerError("this UNet is not a Stable Diffusion-style UNet2DConditionModel; its weights cannot be exported for ComfyUI")
    prefixes = _module_prefixes(unet)
    names: dict[str, str] = {}
    for name, _ in unet.named_parameters():
        names[name] = _ldm_name(name, prefixes)
    if len(set(names.values())) != len(names):
        raise SteerError("this UNet's layout maps two parameters onto one ComfyUI name; it cannot be exported")
    return names


def _ldm_name(name: str, prefixes: dict[str, str]) -> str:
    # Longest matching module prefix wins (e.g. "time_embedding.linear_1" over nothing shorter).
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in prefixes:
            rest = ".".join(parts[cut:])
            try:
                if ".resnets." in prefix:
                    rest = _resnet_layer(rest)
            except KeyError:
                break
            return f"{prefixes[prefix]}.{rest}"
    raise SteerError(f"no ComfyUI (LDM) name is known for the UNet parameter {name!r}; this UNet layout is not supported for export")
