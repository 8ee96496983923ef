"""The random-weight checkpoint is a usable stand-in for SD1.5: ComfyUI detects it as SD15, and
the UNet, CLIP and VAE all respond to their inputs (a dead model would let guidance tests pass
for the wrong reason).

ComfyUI is loaded in a subprocess (cwd = COMFYUI_PATH) so this process never imports it.
"""

import json
import os
import subprocess
import sys

import pytest
from comfy_server import comfyui_path

RESULT_MARKER = "STEER_PROBE_RESULT "

# Runs inside ComfyUI; prints one JSON line of measurements.
PROBE_SCRIPT = r"""
import json, logging, sys, time
comfyui_path, checkpoint_path, marker = sys.argv[1:4]
sys.path.insert(0, comfyui_path)
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
import comfy.sd

class KeptWarnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []
    def emit(self, record):
        self.lines.append(record.getMessage())
warnings = KeptWarnings()
logging.getLogger().addHandler(warnings)

started = time.monotonic()
model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(checkpoint_path, output_vae=True, output_clip=True)
load_seconds = time.monotonic() - started

def mean_abs(t):
    return t.abs().mean().item()

with torch.inference_mode():
    def encode(text):
        return clip.encode_from_tokens(clip.tokenize(text)).float()
    cond_apple = encode("a red apple on a wooden table")
    cond_car = encode("a blue car in the snow")

    # One batch of three: (latent 1, apple), (latent 2, apple), (latent 1, car), at a mid timestep.
    generator = torch.Generator().manual_seed(0)
    latent_1 = torch.randn(1, 4, 8, 8, generator=generator)
    latent_2 = torch.randn(1, 4, 8, 8, generator=generator)
    unet = model.model.diffusion_model
    x = torch.cat([latent_1, latent_2, latent_1])
    context = torch.cat([cond_apple, cond_apple, cond_car])
    timesteps = torch.full((3,), 500.0)
    started = time.monotonic()
    eps = unet(x.to(model.model.get_dtype()), timesteps, context=context.to(model.model.get_dtype())).float()
    unet_seconds = time.monotonic() - started

    # VAE.decode takes the unscaled latent a KSampler outputs (model-space latent / 0.18215)
    # and returns BHWC pixels in [0, 1].
    images = vae.decode(torch.cat([latent_1, latent_2]) / 0.18215).float()

eps_scale = mean_abs(eps[0])
print(marker + json.dumps({
    "model_config": type(model.model.model_config).__name__,
    "model_type": model.model.model_type.name,
    "latent_format": type(model.model.latent_format).__name__,
    "clip_model": type(clip.cond_stage_model).__name__,
    "load_warnings": warnings.lines,
    "eps_finite": bool(torch.isfinite(eps).all()),
    "eps_mean_abs": eps_scale,
    "eps_change_with_latent": mean_abs(eps[1] - eps[0]) / eps_scale,
    "eps_change_with_prompt": mean_abs(eps[2] - eps[0]) / eps_scale,
    "cond_change_with_prompt": mean_abs(cond_car - cond_apple),
    "image_shape": list(images.shape),
    "image_pixel_std": images[0].std().item(),
    "image_saturated_fraction": ((images <= 0.0) | (images >= 1.0)).float().mean().item(),
    "image_change_with_latent": mean_abs(images[1] - images[0]),
    "load_seconds": load_seconds,
    "unet_batch3_seconds": unet_seconds,
}))
"""


@pytest.fixture(scope="module")
def probe(tiny_checkpoint):
    completed = subprocess.run(
        [sys.executable, "-c", PROBE_SCRIPT, str(comfyui_path()), str(tiny_checkpoint), RESULT_MARKER],
        cwd=str(comfyui_path()),
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    result_lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    assert completed.returncode == 0 and result_lines, (
        f"probe failed (exit {completed.returncode}):\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    )
    measurements = json.loads(result_lines[-1][len(RESULT_MARKER) :])
    print("tiny checkpoint probe:", json.dumps(measurements, indent=1))
    return measurements


def test_file_has_the_single_file_sd15_layout(tiny_checkpoint):
    from safetensors import safe_open

    with safe_open(str(tiny_checkpoint), framework="pt") as checkpoint:
        keys = list(checkpoint.keys())
        dtypes = {checkpoint.get_slice(key).get_dtype() for key in keys}
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(key.startswith(prefixes) for key in keys)
    for prefix in prefixes:
        assert any(key.startswith(prefix) for key in keys), prefix
    assert dtypes == {"F16"}


def test_detected_as_sd15(probe):
    assert probe["model_config"] == "SD15"
    assert probe["model_type"] == "EPS"
    assert probe["latent_format"] == "SD15"
    assert probe["clip_model"] == "SD1ClipModel"


def test_loads_without_missing_or_unexpected_keys(probe):
    key_warnings = [line for line in probe["load_warnings"] if "missing" in line.lower() or "unexpected" in line.lower()]
    assert not key_warnings


def test_unet_output_is_live(probe):
    assert probe["eps_finite"]
    # A unit-scale noise prediction, neither zero (skipped init) nor blown up.
    assert 0.05 < probe["eps_mean_abs"] < 20


def test_unet_output_depends_on_latent(probe):
    assert probe["eps_change_with_latent"] > 0.1


def test_unet_output_depends_on_prompt(probe):
    assert probe["cond_change_with_prompt"] > 0.01
    assert probe["eps_change_with_prompt"] > 0.05


def test_vae_decode_depends_on_latent_and_is_not_saturated(probe):
    assert probe["image_shape"] == [2, 64, 64, 3]
    assert probe["image_change_with_latent"] > 0.02
    assert probe["image_pixel_std"] > 0.02
    assert probe["image_saturated_fraction"] < 0.2
