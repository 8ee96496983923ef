"""AttnDreamBooth's training step through the diffusers backend (DiffusersBackbone), timed three
ways side by side: plain, capture and official (see personalize_timing.py).

Prints median step times, the ratios to "plain", and peak CUDA memory when on a GPU. Random
weights (random_diffusers.py: an SD-shaped UNet of the chosen size, a tiny CLIP and VAE); nothing
is downloaded.

    python -m steer.benchmarks.personalize_step                 # small SD-shaped UNet on the CPU
    python -m steer.benchmarks.personalize_step --device cuda --size sd15 --batch 8 --latent 64
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from steer.benchmarks.personalize_timing import AMP, add_step_arguments, bench_images, measure, print_results
from steer.benchmarks.random_diffusers import UNET_SIZES, random_sd_components, write_tokenizer_files
from steer.personalize.diffusers_backbone import DiffusersBackbone

VAE_FACTOR = 2  # random_diffusers' VAE halves the image side


def build(size: str, latent: int, device: str) -> DiffusersBackbone:
    folder = write_tokenizer_files(Path(tempfile.mkdtemp()) / "tokenizer")
    return DiffusersBackbone(*random_sd_components(folder, unet_size=size, sample_size=latent), device=device)


def explicit_attention(backbone: DiffusersBackbone):
    """Every attention layer on diffusers' plain AttnProcessor (matmul-softmax) while open."""
    from diffusers.models.attention_processor import AttnProcessor

    @contextmanager
    def scope():
        originals = backbone.unet.attn_processors
        backbone.unet.set_attn_processor(AttnProcessor())
        try:
            yield
        finally:
            backbone.unet.set_attn_processor(originals)

    return scope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(UNET_SIZES), default="small")
    parser.add_argument("--device", default="cpu")
    add_step_arguments(parser, latent=32, repeats=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = build(args.size, args.latent, args.device)
    images = bench_images(args.latent * VAE_FACTOR)
    backbone.cache_latents(images.all_views())
    backbone.set_gradient_checkpointing(args.checkpointing)
    results = measure(backbone, images, explicit_attention(backbone), args.batch, args.repeats, AMP[args.amp])
    print_results(
        f"UNet {args.size}, batch {args.batch}, latent {args.latent}², {args.device}, {args.amp}, "
        f"checkpointing {args.checkpointing}, median of {args.repeats}",
        results,
    )


if __name__ == "__main__":
    main()
