"""Prompt graphs the integration tests share."""

from comfy_server import CHECKPOINT_NAME, PromptBuilder


def sampling_graph(sampler_factory, seed=7, steps=4, prefix="guided", id_prefix=""):
    """checkpoint → CFG guider → SamplerCustomAdvanced(sampler) → VAEDecode → SaveImage.

    `id_prefix` renames the sampling nodes, so ComfyUI re-executes them while the loader stays cached.
    """
    b = PromptBuilder()
    ckpt = b.node("CheckpointLoaderSimple", node_id="ckpt", ckpt_name=CHECKPOINT_NAME)
    pos = b.node("CLIPTextEncode", node_id="pos", clip=ckpt.out(1), text="a red apple")
    neg = b.node("CLIPTextEncode", node_id="neg", clip=ckpt.out(1), text="")
    latent = b.node("EmptyLatentImage", node_id="latent", width=64, height=64, batch_size=1)
    guider = b.node("CFGGuider", node_id=id_prefix + "guider", model=ckpt.out(0), positive=pos.out(0), negative=neg.out(0), cfg=3.0)
    sigmas = b.node("BasicScheduler", node_id=id_prefix + "sigmas", model=ckpt.out(0), scheduler="normal", steps=steps, denoise=1.0)
    noise = b.node("RandomNoise", node_id=id_prefix + "noise", noise_seed=seed)
    sampler = sampler_factory(b, ckpt)
    out = b.node(
        "SamplerCustomAdvanced",
        node_id=id_prefix + "sample",
        noise=noise.out(0),
        guider=guider.out(0),
        sampler=sampler.out(0),
        sigmas=sigmas.out(0),
        latent_image=latent.out(0),
    )
    decoded = b.node("VAEDecode", node_id=id_prefix + "decode", samples=out.out(0), vae=ckpt.out(2))
    b.node("SaveImage", node_id=id_prefix + "save", images=decoded.out(0), filename_prefix=prefix)
    return b, sampler, out


def advanced_sampler_settings(**changes) -> dict:
    """Every option of Steer Guided Sampler (Advanced): the x̂0 shortcut with the image-normalized step, no
    augmentation or time travel, guided throughout; `changes` override any of them."""
    return {
        "gradient_path": "x0_shortcut",
        "step_rule": "image_normalized",
        "scale": 0.5,
        "max_step": 1.0,
        "eta": 0.0,
        "augment_copies": 0,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
        "time_travel_repeats": 1,
        "time_travel_start": 0.3,
        "time_travel_end": 0.7,
        "cfg_gradient": "positive",
        **changes,
    }


def one_step_training_inputs(**changes) -> dict:
    """Steer AttnDreamBooth Train's widget inputs for the shortest training (one token step at 64 px); the MODEL,
    CLIP, VAE and images links are the caller's."""
    return {
        "concept_name": "test_concept",
        "category": "dog",
        "preset": "custom",
        "unet_format": "lora",
        "lora_rank": 4,
        "overwrite": False,
        "seed": 0,
        "token_steps": 1,
        "cross_attention_steps": 0,
        "unet_steps": 0,
        "resolution": 64,
        "token_batch_size": 1,
        **changes,
    }


def tiny_training_plan(**changes) -> dict:
    """Steer AttnDreamBooth Train's plan inputs for a tiny but real training: every stage runs (2 + 1 + 1 steps, batch 2,
    64 px), with learning rates large enough that a few steps visibly change a random-weight model's output."""
    return {
        "preset": "custom",
        "token_steps": 2,
        "cross_attention_steps": 1,
        "unet_steps": 1,
        "token_batch_size": 2,
        "cross_attention_batch_size": 2,
        "unet_batch_size": 2,
        "token_learning_rate": 0.05,
        "cross_attention_learning_rate": 1e-3,
        "unet_learning_rate": 1e-3,
        "resolution": 64,
        "augmented_views": 2,
        "precision": "fp32",
        "gradient_checkpointing": True,
        **changes,
    }


def txt2img(b, model, clip, vae, text, seed, prefix="", side=64):
    """The stock text-to-image nodes (CLIPTextEncode, EmptyLatentImage, KSampler euler 3 steps, VAEDecode, SaveImage
    as `prefix`save) on the given MODEL, CLIP and VAE links."""
    positive = b.node("CLIPTextEncode", node_id=prefix + "pos", clip=clip, text=text)
    negative = b.node("CLIPTextEncode", node_id=prefix + "neg", clip=clip, text="")
    latent = b.node("EmptyLatentImage", node_id=prefix + "latent", width=side, height=side, batch_size=1)
    sampled = b.node(
        "KSampler",
        node_id=prefix + "sampler",
        model=model,
        positive=positive.out(0),
        negative=negative.out(0),
        latent_image=latent.out(0),
        seed=seed,
        steps=3,
        cfg=4.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    decoded = b.node("VAEDecode", node_id=prefix + "decode", samples=sampled.out(0), vae=vae)
    b.node("SaveImage", node_id=prefix + "save", images=decoded.out(0), filename_prefix="steer_attndreambooth")


def concept_sample_graph(loader, prompt: str, lora: str | None = None, concept: str | None = None, seed: int = 11) -> dict:
    """The stock txt2img graph on the (MODEL, CLIP, VAE) node `loader(b)` adds, optionally with LoraLoaderModelOnly or
    Steer AttnDreamBooth Load."""
    b = PromptBuilder()
    models = loader(b)
    model, text = models.out(0), prompt
    if lora is not None:
        model = b.node("LoraLoaderModelOnly", node_id="lora", model=model, lora_name=lora, strength_model=1.0).out(0)
    if concept is not None:
        load = b.node("SteerAttnDreamBoothLoad", node_id="load", model=model, clip=models.out(1), concept=concept, strength=1.0)
        model, text = load.out(0), load.out(2)
    txt2img(b, model, models.out(1), models.out(2), text, seed)
    return b.prompt()
