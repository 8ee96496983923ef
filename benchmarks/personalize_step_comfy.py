"""AttnDreamBooth's training step through the ComfyUI backend (ComfyBackbone over ComfyUI's own UNet,
loaded by ComfyUI's own checkpoint loader), timed three ways side by side: plain, capture and
official (see personalize_timing.py).

Prints median step times, the ratios to "plain", and peak CUDA memory on a GPU. Needs a ComfyUI
checkout (COMFYUI_PATH); nothing is downloaded (the default checkpoint is random_checkpoints.py's
tiny SD1.5-shaped one). Compare with personalize_step.py (the diffusers backend).

    COMFYUI_PATH=/opt/ComfyUI python -m steer.benchmarks.personalize_step_comfy          # tiny checkpoint, CPU
    COMFYUI_PATH=... python -m steer.benchmarks.personalize_step_comfy --checkpoint v1-5.safetensors --batch 8 --latent 64 --amp bf16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from steer.benchmarks.personalize_timing import AMP, add_step_arguments, bench_images, measure, print_results
from steer.benchmarks.random_checkpoints import tiny_sd15_checkpoint
from steer.cli.comfy_bootstrap import import_comfyui
from steer.personalize.regularizer import merge_heads, split_heads

VAE_FACTOR = 8  # SD's VAE: 8 pixels per latent


def explicit_self_attention(q, k, v, extra_options):
    """attn1 as the official hook computes it: matmul, softmax, matmul (no fused kernel)."""
    heads = extra_options["n_heads"]
    qh, kh, vh = (split_heads(t, heads) for t in (q, k, v))
    probabilities = (qh @ kh.transpose(-1, -2) * (q.shape[-1] // heads) ** -0.5).softmax(dim=-1)
    return merge_heads(probabilities @ vh)


def measure_checkpoint(
    path: Path, batch: int, latent: int, repeats: int, amp: torch.dtype | None, checkpointing: bool, force_cpu: bool = False
):
    """(results by variant, architecture, device) for a single-file checkpoint."""
    comfy_sd = import_comfyui(force_cpu=force_cpu)
    from steer.nodes.comfy_personalize import ComfyBackbone

    with torch.inference_mode():
        model, clip, vae = comfy_sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True, embedding_directory=None)[:3]
    images = bench_images(latent * VAE_FACTOR)
    with torch.inference_mode(False), torch.enable_grad():
        backbone = ComfyBackbone(model, clip, vae)
        backbone.cache_latents(images.all_views())  # before opening, as the node does: VAE and UNet need not be resident together
        with backbone:
            backbone.set_gradient_checkpointing(checkpointing)
            results = measure(backbone, images, lambda: backbone.attention_replaced(attn1=explicit_self_attention), batch, repeats, amp)
    return results, backbone.architecture, backbone.device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="an SD1.x/SD2.x single-file checkpoint (default: the tiny random test checkpoint)")
    add_step_arguments(parser, latent=16, repeats=5)
    parser.add_argument("--cpu", action="store_true", help="force ComfyUI onto the CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path = Path(args.checkpoint) if args.checkpoint else tiny_sd15_checkpoint()
    results, architecture, device = measure_checkpoint(
        path, args.batch, args.latent, args.repeats, AMP[args.amp], args.checkpointing, args.cpu
    )
    print_results(
        f"ComfyUI backend: {path.name} ({architecture}), batch {args.batch}, latent {args.latent}², {device}, {args.amp}, "
        f"checkpointing {args.checkpointing}, median of {args.repeats}",
        results,
    )


if __name__ == "__main__":
    main()
