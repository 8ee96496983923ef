"""diffusers -> ComfyUI (LDM) UNet names, checked against ComfyUI's own table (a JSON made by
tests/unit/data/make_comfy_sd_unet_names.py from comfy.utils.unet_to_diffusers)."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from unit.data.make_comfy_sd_unet_names import SD15_UNET, SDXL_UNET
from unit.tiny_sd import tiny_components, write_tokenizer_files

from steer.errors import SteerError
from steer.personalize.ldm_names import diffusers_to_ldm_names

SD21_UNET = dict(SD15_UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
COMFY_TABLE = json.loads((Path(__file__).parent / "data" / "comfy_sd_unet_names.json").read_text())
COMFY_SDXL_TABLE = json.loads((Path(__file__).parent / "data" / "comfy_sdxl_unet_names.json").read_text())


def meta_unet(config):
    with torch.device("meta"):
        return UNet2DConditionModel(**config)


@pytest.mark.parametrize("config", [SD15_UNET, SD21_UNET], ids=["sd15", "sd21"])
def test_every_name_agrees_with_comfyui(config):
    names = diffusers_to_ldm_names(meta_unet(config))
    assert names == COMFY_TABLE


def test_every_sdxl_name_agrees_with_comfyui():
    """Three levels, transformer depths 2 and 10, and the size/pooled embedding (label_emb)."""
    names = diffusers_to_ldm_names(meta_unet(SDXL_UNET))
    assert names == COMFY_SDXL_TABLE
    assert names["add_embedding.linear_1.weight"] == "label_emb.0.0.weight"
    assert (
        names["down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight"]
        == "input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight"
    )


def test_well_known_sd15_names():
    names = diffusers_to_ldm_names(meta_unet(SD15_UNET))
    assert (
        names["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
        == "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    )
    assert names["down_blocks.0.downsamplers.0.conv.weight"] == "input_blocks.3.0.op.weight"
    assert names["down_blocks.1.resnets.0.conv_shortcut.weight"] == "input_blocks.4.0.skip_connection.weight"
    assert names["mid_block.attentions.0.proj_in.weight"] == "middle_block.1.proj_in.weight"
    assert names["mid_block.resnets.1.time_emb_proj.bias"] == "middle_block.2.emb_layers.1.bias"
    assert names["up_blocks.0.upsamplers.0.conv.weight"] == "output_blocks.2.1.conv.weight"
    assert names["up_blocks.1.upsamplers.0.conv.weight"] == "output_blocks.5.2.conv.weight"
    assert (
        names["up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0.bias"]
        == "output_blocks.11.1.transformer_blocks.0.attn2.to_out.0.bias"
    )
    assert names["conv_out.weight"] == "out.2.weight"


def test_the_tiny_sd_shaped_unet_maps_one_to_one(tmp_path):
    unet = tiny_components(write_tokenizer_files(tmp_path))[0]
    names = diffusers_to_ldm_names(unet)
    assert set(names) == {name for name, _ in unet.named_parameters()}
    assert len(set(names.values())) == len(names)
    # Two levels with one resnet each: input blocks 1 (res+attn), 2 (downsample), 3 (res+attn); output blocks 0-3.
    assert (
        names["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q.weight"]
        == "input_blocks.3.1.transformer_blocks.0.attn2.to_q.weight"
    )
    assert names["up_blocks.0.upsamplers.0.conv.weight"] == "output_blocks.1.2.conv.weight"
    assert names["up_blocks.1.attentions.1.proj_out.bias"] == "output_blocks.3.1.proj_out.bias"


def test_a_non_sd_unet_is_refused():
    with pytest.raises(SteerError, match="Stable Diffusion"):
        diffusers_to_ldm_names(torch.nn.Linear(2, 2))
