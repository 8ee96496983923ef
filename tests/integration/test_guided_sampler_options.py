"""The guided sampler's cost options inside real ComfyUI: gradient checkpointing and the TAESD loss decoder."""

from pathlib import Path

import numpy as np
import pytest
from comfy_server import CHECKPOINT_NAME, ExecutionFailed, PromptBuilder, run_script

TAESD_BUILDER = Path(__file__).resolve().parents[1] / "fixtures" / "build_taesd_decoder.py"


def _graph(tag, steps=2, **sampler_inputs):
    """checkpoint → CFG → SamplerCustomAdvanced(Steer Guided Sampler (Advanced), colour loss) → decode → save."""
    b = PromptBuilder()
    ckpt = b.node("CheckpointLoaderSimple", node_id="ckpt", ckpt_name=CHECKPOINT_NAME)
    pos = b.node("CLIPTextEncode", node_id="pos", clip=ckpt.out(1), text="a red apple")
    neg = b.node("CLIPTextEncode", node_id="neg", clip=ckpt.out(1), text="")
    latent = b.node("EmptyLatentImage", node_id="latent", width=64, height=64, batch_size=1)
    guider = b.node("CFGGuider", node_id=f"{tag}_guider", model=ckpt.out(0), positive=pos.out(0), negative=neg.out(0), cfg=3.0)
    sigmas = b.node("BasicScheduler", node_id=f"{tag}_sigmas", model=ckpt.out(0), scheduler="normal", steps=steps, denoise=1.0)
    noise = b.node("RandomNoise", node_id=f"{tag}_noise", noise_seed=11)
    loss = b.node("SteerColorLoss", node_id=f"{tag}_loss", color="#ff0000", match="pixels")
    settings = dict(
        gradient_path="through_model",
        cfg_gradient="positive",
        step_rule="polyak",
        scale=1.0,
        max_step=0.5,
        augment_copies=0,
        time_travel_repeats=1,
        time_travel_start=0.0,
        time_travel_end=1.0,
        guidance_start=0.0,
        guidance_end=1.0,
        eta=0.0,
    )
    settings.update(sampler_inputs)
    sampler = b.node("SteerGuidedSamplerAdvanced", node_id=f"{tag}_steer", vae=ckpt.out(2), loss=loss.out(0), **settings)
    out = b.node(
        "SamplerCustomAdvanced",
        node_id=f"{tag}_sample",
        noise=noise.out(0),
        guider=guider.out(0),
        sampler=sampler.out(0),
        sigmas=sigmas.out(0),
        latent_image=latent.out(0),
    )
    decoded = b.node("VAEDecode", node_id=f"{tag}_decode", samples=out.out(0), vae=ckpt.out(2))
    b.node("SaveImage", node_id=f"{tag}_save", images=decoded.out(0), filename_prefix=f"options_{tag}")
    return b.prompt()


def _pixels(comfy, prompt, tag, timeout=900):
    (image,) = comfy.images(comfy.run(prompt, timeout=timeout), f"{tag}_save")
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


@pytest.mark.parametrize("gradient_path", ["through_model", "x0_shortcut"])
def test_gradient_checkpointing_leaves_the_guided_image_unchanged(comfy, gradient_path):
    tag = gradient_path[:2]
    plain = _pixels(comfy, _graph(f"{tag}off", gradient_path=gradient_path, gradient_checkpointing=False), f"{tag}off")
    checkpointed = _pixels(comfy, _graph(f"{tag}on", gradient_path=gradient_path, gradient_checkpointing=True), f"{tag}on")
    unguided = _pixels(comfy, _graph(f"{tag}zero", gradient_path=gradient_path, scale=0.0), f"{tag}zero")
    assert np.abs(plain - unguided).max() > 10 / 255  # the guidance did act, so equality below means something
    assert np.abs(checkpointed - plain).max() <= 2 / 255


def _write_tiny_decoder(path: Path) -> None:
    run_script(TAESD_BUILDER, path, timeout=300)


def test_taesd_loss_decoder_needs_its_file_then_guides_through_it(comfy):
    decoder_file = comfy.models_dir / "vae_approx" / "taesd_decoder.safetensors"
    decoder_file.unlink(missing_ok=True)
    with pytest.raises(ExecutionFailed) as failure:
        comfy.run(_graph("tmiss", gradient_path="x0_shortcut", loss_decoder="taesd"), timeout=300)
    message = failure.value.exception_message
    assert "taesd_decoder" in message and "vae_approx" in message

    _write_tiny_decoder(decoder_file)
    try:
        tiny = _pixels(comfy, _graph("ttiny", gradient_path="x0_shortcut", loss_decoder="taesd"), "ttiny")
        full = _pixels(comfy, _graph("tfull", gradient_path="x0_shortcut", loss_decoder="vae"), "tfull")
        unguided = _pixels(comfy, _graph("tzero", gradient_path="x0_shortcut", scale=0.0), "tzero")
    finally:
        decoder_file.unlink(missing_ok=True)
    # Guidance acted through the tiny decoder, and a different decoder gave a different push.
    assert np.abs(tiny - unguided).max() > 10 / 255
    assert np.abs(tiny - full).max() > 2 / 255
