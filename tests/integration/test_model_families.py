"""Guided sampling on every model family, in a real ComfyUI: SDXL, SD3, Flux dev (guidance-distilled) and schnell,
and Chroma (Flux-like blocks that add in place, but with real CFG and a negative prompt, so its gradient runs through
the positive branch of a two-branch batch).

The models are the families' real comfy.model_base classes with reduced configs and random weights, built in
the server by the test pack tests/integration/family_pack (see steer.benchmarks.random_families for why no
detected file is used). Each graph is the stock one for its family: SamplerCustomAdvanced with CFGGuider
(cfg 3 with a negative prompt for SDXL, SD3 and Chroma; cfg 1, where ComfyUI skips the negative branch, plus
FluxGuidance for Flux dev), the family's empty latent, VAEDecode and SaveImage.
"""

import time

import numpy as np
import pytest
from comfy_server import ExecutionFailed, PromptBuilder
from graphs import advanced_sampler_settings, one_step_training_inputs
from workflow_files import stage_tiny_decoders

FAMILIES = ("sdxl", "sd3", "flux_dev", "flux_schnell", "chroma")
SIDE = 64
FLOW = {"sd3", "flux_dev", "flux_schnell", "chroma"}


def family_graph(family, sampler_factory, steps=4, seed=3, tag="g", vae_family=None, model=None):
    """The family's stock graph with `sampler_factory(b, vae)` as its sampler; node ids carry `tag`. `model(b)`, if
    given, is the MODEL link used instead of the test pack's (the conditioning and VAE stay the pack's)."""
    b = PromptBuilder()
    models = b.node("SteerTestFamily", node_id=f"model_{family}", family=family)
    diffusion_model = model(b) if model is not None else models.out(0)
    vae = b.node("SteerTestFamily", node_id=f"model_{vae_family}", family=vae_family).out(1) if vae_family else models.out(1)
    positive, negative, cfg = models.out(2), models.out(3), 3.0
    if family.startswith("flux"):
        cfg = 1.0
        if family == "flux_dev":
            positive = b.node("FluxGuidance", node_id=f"{tag}_flux_guidance", conditioning=positive, guidance=3.5).out(0)
    guider = b.node("CFGGuider", node_id=f"{tag}_guider", model=diffusion_model, positive=positive, negative=negative, cfg=cfg)
    scheduler = "simple" if family in FLOW else "normal"
    sigmas = b.node("BasicScheduler", node_id=f"{tag}_sigmas", model=diffusion_model, scheduler=scheduler, steps=steps, denoise=1.0)
    empty = "EmptySD3LatentImage" if family in FLOW else "EmptyLatentImage"
    latent = b.node(empty, node_id=f"{tag}_latent", width=SIDE, height=SIDE, batch_size=1)
    noise = b.node("RandomNoise", node_id=f"{tag}_noise", noise_seed=seed)
    out = b.node(
        "SamplerCustomAdvanced",
        node_id=f"{tag}_sample",
        noise=noise.out(0),
        guider=guider.out(0),
        sampler=sampler_factory(b, vae).out(0),
        sigmas=sigmas.out(0),
        latent_image=latent.out(0),
    )
    decoded = b.node("VAEDecode", node_id=f"{tag}_decode", samples=out.out(0), vae=models.out(1))
    b.node("SaveImage", node_id=f"{tag}_save", images=decoded.out(0), filename_prefix=f"family_{family}_{tag}")
    return b


def euler(b, vae):
    return b.node("KSamplerSelect", sampler_name="euler")


def steer(preset="paper", strength=1.0, **extra):
    def factory(b, vae):
        loss = b.node("SteerColorLoss", color="#ff0000", match="pixels")
        return b.node("SteerGuidedSampler", vae=vae, loss=loss.out(0), preset=preset, strength=strength, **extra)

    return factory


def pixels(comfy, family, sampler_factory, tag, **graph):
    result = comfy.run(family_graph(family, sampler_factory, tag=tag, **graph).prompt(), timeout=900)
    (image,) = comfy.images(result, f"{tag}_save")
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def redness(image):
    return float((image[..., 0] - (image[..., 1] + image[..., 2]) / 2).mean())


@pytest.mark.parametrize("family", FAMILIES)
def test_strength_zero_is_stock_euler_and_the_upstream_model_is_unchanged(comfy, family):
    plain = pixels(comfy, family, euler, "plain")
    zero = pixels(comfy, family, steer("paper", 0.0), "zero")
    assert np.abs(zero - plain).max() <= 2 / 255, family  # DDIM(η=0) in the family's own noise law is euler
    pixels(comfy, family, steer("paper", 1.0), "guided_once")  # a guided run through the model, on the same MODEL
    again = pixels(comfy, family, euler, "plain_again")
    assert np.array_equal(again, plain), family


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset", ["mpgd", "paper", "freedom", "ugd", "dps"])
def test_every_preset_moves_the_colour_toward_the_target(comfy, family, preset):
    plain = pixels(comfy, family, euler, "plain", steps=6)
    guided = pixels(comfy, family, steer(preset, 1.0), f"{preset}", steps=6)
    change = redness(guided) - redness(plain)
    print(f"{family} {preset}: redness change {change:+.3f}")
    assert change > 0.02, (family, preset, change)


@pytest.mark.parametrize("family", FAMILIES)
def test_cancel_stops_guided_sampling(comfy, family):
    prompt_id = comfy.queue(family_graph(family, steer("paper", 1.0), steps=40, tag="cancel", seed=11).prompt())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        comfy.pump_events(timeout=1.0)
        if comfy.seen_progress(prompt_id, "cancel_sample"):
            break
    comfy.interrupt()
    result = comfy.wait(prompt_id, timeout=300)
    assert result.status == "interrupted"
    assert max(value for value, _ in result.progress("cancel_sample")) < 40


def test_a_vae_of_another_latent_space_is_refused_before_sampling(comfy):
    with pytest.raises(ExecutionFailed) as failure:
        comfy.run(family_graph("sd3", steer("mpgd", 1.0), tag="wrong_vae", vae_family="sdxl").prompt(), timeout=300)
    message = failure.value.exception_message
    assert failure.value.exception_type.endswith("SteerError"), message
    assert "4" in message and "16" in message and "VAE" in message, message


@pytest.fixture(scope="module")
def tiny_decoders(comfy):
    """Random TAESD decoders under the names ComfyUI's previews use (taesdxl, taesd3, taef1), in models/vae_approx."""
    stage_tiny_decoders(comfy.models_dir / "vae_approx")
    return comfy.models_dir / "vae_approx"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_taesd_decoder_serves_the_loss(comfy, tiny_decoders, family):
    plain = pixels(comfy, family, euler, "plain")
    guided = pixels(comfy, family, steer("mpgd", 1.0, loss_decoder="taesd"), "taesd")
    assert np.abs(guided - plain).max() > 2 / 255  # a random decoder steers somewhere; that it loaded for this latent space is the point


def advanced(checkpointing):
    def factory(b, vae):
        loss = b.node("SteerColorLoss", color="#ff0000", match="pixels")
        settings = advanced_sampler_settings(
            gradient_path="through_model", scale=1.0, max_step=0.5, loss_decoder="vae", gradient_checkpointing=checkpointing
        )
        return b.node("SteerGuidedSamplerAdvanced", vae=vae, loss=loss.out(0), **settings)

    return factory


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_gives_the_same_image_through_the_model(comfy, family):
    """Flux's blocks add residuals in place; checkpointing them naively would change the gradient (tests/unit/test_checkpointing.py)."""
    with_checkpoints = pixels(comfy, family, advanced(True), "ckpt_on")
    without = pixels(comfy, family, advanced(False), "ckpt_off")
    assert np.array_equal(with_checkpoints, without), np.abs(with_checkpoints - without).max()


@pytest.mark.parametrize("family", [family for family in FAMILIES if family != "sdxl"])  # SDXL trains: test_attndreambooth_sdxl.py
def test_attndreambooth_refuses_the_family_and_names_what_it_supports(comfy, family):
    from comfy_server import CHECKPOINT_NAME

    b = PromptBuilder()
    models = b.node("SteerTestFamily", node_id=f"model_{family}", family=family)
    ckpt = b.node("CheckpointLoaderSimple", node_id="sd15", ckpt_name=CHECKPOINT_NAME)
    photos = b.node("EmptyImage", node_id="photos", width=64, height=64, batch_size=3, color=0x336699)
    train = b.node(
        "SteerAttnDreamBoothTrain",
        node_id=f"train_{family}",
        model=models.out(0),
        clip=ckpt.out(1),
        vae=models.out(1),
        images=photos.out(0),
        **one_step_training_inputs(concept_name=f"refused_{family}"),
    )
    b.node("PreviewImage", node_id=f"preview_{family}", images=train.out(3))
    with pytest.raises(ExecutionFailed) as failure:
        comfy.run(b.prompt(), timeout=300)
    message = failure.value.exception_message
    assert failure.value.exception_type.endswith("SteerError"), message
    assert "1.x, 2.x and SDXL" in message and "not supported" in message, message
    assert not (comfy.models_dir / "loras" / f"refused_{family}.safetensors").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_both_cfg_gradients_steer_through_the_model(comfy, family):
    """positive: the gradient through the prompt's branch only (the negative one runs without a graph); combined: through
    the whole CFG prediction. Flux at cfg 1 has one branch, so the two are the same computation there."""
    plain = pixels(comfy, family, euler, "plain")
    images = {}
    for cfg_gradient in ("positive", "combined"):

        def factory(b, vae, cfg_gradient=cfg_gradient):
            loss = b.node("SteerColorLoss", color="#ff0000", match="pixels")
            settings = advanced_sampler_settings(gradient_path="through_model", scale=1.0, max_step=0.5, cfg_gradient=cfg_gradient)
            return b.node("SteerGuidedSamplerAdvanced", vae=vae, loss=loss.out(0), **settings)

        images[cfg_gradient] = pixels(comfy, family, factory, f"cfg_{cfg_gradient}")
        assert redness(images[cfg_gradient]) - redness(plain) > 0.02, (family, cfg_gradient)
    if family.startswith("flux"):
        assert np.array_equal(images["positive"], images["combined"])


# --------------------------------------------------------------------------------------------
# A detected SDXL-family file through the stock loader


@pytest.fixture(scope="module")
def vega_unet(comfy):
    """A random-weight Segmind Vega UNet (1.5 GB, the smallest SDXL relative ComfyUI detects) in models/diffusion_models."""
    from steer.benchmarks.random_vega import vega_unet_file

    path = vega_unet_file()
    link = comfy.models_dir / "diffusion_models" / path.name
    if not link.exists():
        link.symlink_to(path)
    return path.name


def test_a_detected_vega_file_through_the_stock_unet_loader_is_steered(comfy, vega_unet):
    """UNETLoader detects the file (ComfyUI's Segmind_Vega: the SDXL model class at full width); SDXL's conditioning
    shapes and VAE come from the test pack. Strength 0 is stock euler, both gradient paths steer, the MODEL is unchanged."""

    def loader(b):
        return b.node("UNETLoader", node_id="vega", unet_name=vega_unet, weight_dtype="default").out(0)

    plain = pixels(comfy, "sdxl", euler, "vega_plain", model=loader)
    zero = pixels(comfy, "sdxl", steer("paper", 0.0), "vega_zero", model=loader)
    assert np.abs(zero - plain).max() <= 2 / 255
    for preset in ("mpgd", "paper"):
        change = redness(pixels(comfy, "sdxl", steer(preset, 1.0), f"vega_{preset}", model=loader)) - redness(plain)
        print(f"vega {preset}: redness change {change:+.3f}")
        assert change > 0.02, (preset, change)
    assert np.array_equal(pixels(comfy, "sdxl", euler, "vega_plain_again", model=loader), plain)
