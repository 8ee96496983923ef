"""Regenerate comfy_sd_unet_names.json: ComfyUI's own diffusers -> LDM UNet name table for the
SD1.x/SD2.x layout (comfy.utils.unet_to_diffusers), restricted to the parameters a diffusers
SD1.5 UNet has. Run by hand with a ComfyUI checkout; never imported by pytest (the pytest
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

if __name__ == "__main__":
    comfy = os.environ.get("COMFYUI_PATH", "/opt/ComfyUI")
    table = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys, json; sys.path.insert(0, {comfy!r}); import comfy.utils; "
                f"print(json.dumps(comfy.utils.unet_to_diffusers({COMFY_CONFIG!r})))",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    with torch.device("meta"):
        names = [name for name, _ in UNet2DConditionModel(**SD15_UNET).named_parameters()]
    out = {name: table[name] for name in names}
    Path(__file__).with_name("comfy_sd_unet_names.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{len(out)} names written")
