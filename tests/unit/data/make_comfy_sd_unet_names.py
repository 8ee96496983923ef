"""Regenerate comfy_sd_unet_names.json and comfy_sdxl_unet_names.json: ComfyUI's own diffusers -> LDM
UNet name tables for the SD1.x/SD2.x and SDXL layouts (comfy.utils.unet_to_diffusers), restricted to
the parameters a diffusers SD1.5 / SDXL UNet has. Run by hand with a ComfyUI checkout; never imported by pytest (the pytest
process must not import ComfyUI).

    COMFYUI_PATH=/opt/ComfyUI python tests/unit/data/make_comfy_sd_unet_names.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
)
# The same layout in ComfyUI's detected-config terms (comfy/model_detection.py).
COMFY_CONFIG = {
    "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "transformer_depth_middle": 1,
}
# SDXL base: three levels, transformer depths 0/2/10, the "text_time" added conditioning.
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
SDXL_COMFY_CONFIG = {
    "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 2, 4],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "transformer_depth_middle": 10,
}


def write_table(diffusers_config, comfy_config, file_name):
    comfy = os.environ.get("COMFYUI_PATH", "/opt/ComfyUI")
    table = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys, json; sys.path.insert(0, {comfy!r}); import comfy.utils; "
                f"print(json.dumps(comfy.utils.unet_to_diffusers({comfy_config!r})))",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    with torch.device("meta"):
        names = [name for name, _ in UNet2DConditionModel(**diffusers_config).named_parameters()]
    out = {name: table[name] for name in names}
    Path(__file__).with_name(file_name).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{file_name}: {len(out)} names written")


if __name__ == "__main__":
    write_table(SD15_UNET, COMFY_CONFIG, "comfy_sd_unet_names.json")
    write_table(SDXL_UNET, SDXL_COMFY_CONFIG, "comfy_sdxl_unet_names.json")
