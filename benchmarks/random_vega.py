"""A random-weight Segmind Vega UNet file, the smallest SDXL relative ComfyUI detects (745 M parameters, 1.5 GB in
fp16), for the test that loads a detected SDXL-family file through the stock UNETLoader. Built once in a ComfyUI
subprocess from ComfyUI's own Segmind_Vega model class, checked against ComfyUI's detection, and cached beside the
tiny SD1.5 checkpoint (random_checkpoints.cache_dir()). Nothing is downloaded.

    python -m steer.benchmarks.random_vega OUT.safetensors   (with COMFYUI_PATH set)
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from .random_checkpoints import build_in_subprocess, cached_model, comfyui_path, import_comfy, init_randomly
from .random_families import SEED

BUILD_TIMEOUT_SECONDS = 900
# ComfyUI's detected config for Vega (comfy/model_detection.py, unet_config_from_diffusers_unet).
VEGA_UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "num_classes": "sequential",
    "adm_in_channels": 2816,
    "in_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 1, 1, 2, 2],
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 2, 2, 2],
    "channel_mult": [1, 2, 4],
    "transformer_depth_middle": -1,
    "use_linear_in_transformer": True,
    "context_dim": 2048,
    "num_head_channels": 64,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


def vega_unet_file() -> Path:
    """Path of the cached Vega UNet file, building it first (about a minute) if this version is not cached."""
    builder_hash = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]

    def build(partial: Path) -> None:
        for stale in partial.parent.glob("random_segmind_vega-*.safetensors*"):
            stale.unlink(missing_ok=True)
        build_in_subprocess(partial, __spec__.name, "the random Vega UNet", BUILD_TIMEOUT_SECONDS)

    return cached_model(f"random_segmind_vega-{builder_hash}.safetensors", "random_segmind_vega.lock", build)


def main() -> None:
    from safetensors.torch import save_file

    output = Path(sys.argv[1])
    comfy = import_comfy(comfyui_path())
    config = comfy.supported_models.Segmind_Vega(dict(VEGA_UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, "")
    torch.manual_seed(SEED)
    init_randomly(model.diffusion_model)
    state = {key: value.to(torch.float16).contiguous() for key, value in model.diffusion_model.state_dict().items()}
    del model
    detected = comfy.model_detection.model_config_from_unet(state, "")
    if type(detected) is not comfy.supported_models.Segmind_Vega:
        raise RuntimeError(f"the written UNet is detected as {type(detected).__name__}, not Segmind_Vega")
    save_file(state, str(output))


if __name__ == "__main__":
    main()
