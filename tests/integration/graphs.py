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
