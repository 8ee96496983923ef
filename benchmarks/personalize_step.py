"""One AttnDreamBooth training step (UNet forward + backward, whole UNet trainable) in three ways:

  plain     diffusion MSE only, every attention on the default fused kernel (SDPA)
  capture   + the cross-attention regularizer: attn2 computed explicitly and its [V]/category
            columns captured (what personalize/ does); self-attention stays on SDPA
  official  the official hook's way: every attention layer, self-attention included, on
            explicit matmul-softmax, plus the same capture

Prints median step times, the ratios to "plain", and peak CUDA memory when on a GPU.
Random weights; nothing is downloaded.

    python benchmarks/personalize_step.py                 # small SD-shaped UNet on the CPU
    python benchmarks/personalize_step.py --device cuda --size sd15 --batch 8 --latent 64
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor

from steer.benchmarks.guidance_cost import load_script
from steer.personalize.diffusers_backbone import CapturingCrossAttnProcessor, DiffusersBackbone
from steer.personalize.regularizer import AttentionCapture, attention_regularizer
from steer.personalize.stages import RegularizerWeights

# The tests' tiny text encoder/tokenizer helpers, loaded by path (no sys.path change).
_tiny_sd = load_script(Path(__file__).resolve().parents[1] / "tests" / "unit" / "tiny_sd.py", "steer_bench_tiny_sd")
TEXT_WIDTH, tiny_components, write_tokenizer_files = _tiny_sd.TEXT_WIDTH, _tiny_sd.tiny_components, _tiny_sd.write_tokenizer_files

UNETS = {
    "tiny": dict(block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=2, norm_num_groups=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2),
    "small": dict(block_out_channels=(64, 128, 128), layers_per_block=1, attention_head_dim=4, norm_num_groups=32,
                  down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",), up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2),
    "sd15": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
}


def build(size: str, latent: int, device: str) -> DiffusersBackbone:
    folder = write_tokenizer_files(Path(tempfile.mkdtemp()) / "tokenizer")
    _, text_encoder, tokenizer, vae, scheduler = tiny_components(folder)
    unet = UNet2DConditionModel(sample_size=latent, in_channels=4, out_channels=4, cross_attention_dim=TEXT_WIDTH, **UNETS[size])
    backbone = DiffusersBackbone(unet, text_encoder, tokenizer, vae, scheduler, device=device)
    backbone.reset_token("dog")
    for parameter in backbone.parameter_groups()["unet"].values():
        parameter.requires_grad_(True)
    return backbone


def step_time(backbone, variant: str, batch: int, latent: int, repeats: int, amp: torch.dtype | None) -> float:
    device = backbone.device
    prompt = backbone.encode_prompt("a photo of a [V] dog")
    text = prompt.embeddings.detach().expand(batch, -1, -1)
    latents = torch.randn(batch, 4, latent, latent, device=device)
    timesteps = torch.randint(0, 1000, (batch,), device=device)
    capture = AttentionCapture()
    originals = backbone.unet.attn_processors
    if variant == "official":
        backbone.unet.set_attn_processor({name: CapturingCrossAttnProcessor(capture) if name.endswith("attn2.processor") else AttnProcessor() for name in originals})
    scope = backbone.attention_capture(capture) if variant == "capture" else nullcontext()
    times = []
    with scope:
        for index in range(repeats + 2):  # two warm-up steps
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                recording = capture.recording(prompt.token_index, prompt.category_index) if variant != "plain" else nullcontext([])
                with recording as maps:
                    prediction = backbone.predict_noise(latents, timesteps, text)
            loss = torch.nn.functional.mse_loss(prediction.float(), latents)
            if variant != "plain":
                loss = loss + attention_regularizer(maps, RegularizerWeights(2.0, 5.0))
            loss.backward()
            backbone.unet.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if index >= 2:
                times.append(time.perf_counter() - began)
    backbone.unet.set_attn_processor(originals)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(UNETS), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--latent", type=int, default=32, help="latent side (512 px images give 64)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--amp", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = build(args.size, args.latent, args.device)
    backbone.set_gradient_checkpointing(args.checkpointing)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    results = {}
    for variant in ("plain", "capture", "official"):
        if backbone.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = step_time(backbone, variant, args.batch, args.latent, args.repeats, amp)
        peak = torch.cuda.max_memory_allocated() / 2**20 if backbone.device.type == "cuda" else None
        results[variant] = (seconds, peak)
    print(f"UNet {args.size}, batch {args.batch}, latent {args.latent}², {args.device}, {args.amp}, checkpointing {args.checkpointing}, median of {args.repeats}")
    for variant, (seconds, peak) in results.items():
        memory = f", peak {peak:.0f} MiB" if peak is not None else ""
        print(f"  {variant:9s} {seconds * 1000:8.1f} ms/step  ×{seconds / results['plain'][0]:.2f}{memory}")


if __name__ == "__main__":
    main()
