"""The diffusers step benchmark runs the trainer's own step, three ways, on tiny random models."""

import torch
from unit.tiny_sd import single_thread  # noqa: F401 (pytest fixture)

from steer.benchmarks.personalize_step import VAE_FACTOR, build, explicit_attention
from steer.benchmarks.personalize_timing import VARIANTS, bench_images, measure


def test_the_three_variants_time_training_steps_that_move_the_unet():
    backbone = build("tiny", latent=4, device="cpu")
    images = bench_images(4 * VAE_FACTOR)
    assert backbone.cache_latents(images.all_views()) == 3
    before = backbone.unet.conv_in.weight.detach().clone()
    processors = backbone.unet.attn_processors
    results = measure(backbone, images, explicit_attention(backbone), batch=2, repeats=1, amp=None)
    assert set(results) == set(VARIANTS)
    assert all(seconds > 0 and peak is None for seconds, peak in results.values())
    assert not torch.equal(before, backbone.unet.conv_in.weight)  # AdamW stepped: the real step, not forward + backward alone
    assert backbone.unet.attn_processors == processors  # every attention processor is back
    assert backbone._latents.encoded == 3  # the views were encoded once, up front
