"""One AttnDreamBooth training step (UNet forward + backward, whole UNet trainable, as in stage 3)
through the ComfyUI backend: ComfyBackbone over ComfyUI's own UNet, loaded by ComfyUI's own
checkpoint loader. Three ways, measured side by side in one run:

  plain     diffusion MSE only; every attention on ComfyUI's optimized kernel
  capture   + the cross-attention regularizer: attn2 through Steer's replace patch (explicit
            softmax, [V]/category columns captured); attn1 keeps the fused kernel (what training does)
  official  the official hook's way: attn1 explicit as well (matmul-softmax), plus the capture

Prints median step times, the ratios to "plain", and peak CUDA memory on a GPU. Needs a ComfyUI
checkout (COMFYUI_PATH); nothing is downloaded. Compare with benchmarks/personalize_step.py
(the diffusers backend).

    COMFYUI_PATH=/opt/ComfyUI python benchmarks/personalize_step_comfy.py           # the tiny test checkpoint, CPU
    COMFYUI_PATH=... python benchmarks/personalize_step_comfy.py --checkpoint v1-5.safetensors --batch 8 --latent 64 --amp bf16
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from steer.benchmarks.guidance_cost import load_script
from steer.cli.comfy_bootstrap import import_comfyui
from steer.personalize.regularizer import AttentionCapture, attention_regularizer
from steer.personalize.stages import RegularizerWeights

VARIANTS = ("plain", "capture", "official")
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sd15_checkpoint.py"


def tiny_checkpoint() -> Path:
    return load_script(FIXTURE, "steer_bench_fixture").tiny_sd15_checkpoint()


def explicit_self_attention(q, k, v, extra_options):
    """attn1 as the official hook computes it: matmul, softmax, matmul (no fused kernel)."""
    heads = extra_options["n_heads"]
    batch, _, inner = q.shape
    head_dim = inner // heads
    qh, kh, vh = (t.view(batch, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    probabilities = (qh @ kh.transpose(-1, -2) * head_dim**-0.5).softmax(dim=-1)
    return (probabilities @ vh).transpose(1, 2).reshape(batch, -1, inner)


def explicit_attn1(backbone):
    return backbone.attention_replaced(attn1=explicit_self_attention)


def one_step(backbone, variant, prompt, text, latents, timesteps, parameters, amp) -> float:
    device = backbone.device
    capture = AttentionCapture()
    scope = backbone.attention_capture(capture) if variant != "plain" else nullcontext()
    extra = explicit_attn1(backbone) if variant == "official" else nullcontext()
    with scope, extra:
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
        for parameter in parameters:
            parameter.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - began


def measure(backbone, batch, latent, repeats, amp) -> dict[str, tuple[float, float | None]]:
    """Median step time and peak CUDA memory per variant. The variants take turns step by step,
    so a change in machine load (a shared CPU) hits all of them alike."""
    device = backbone.device
    with torch.no_grad():
        prompt = backbone.encode_prompt("a photo of a [V] dog")
    text = prompt.embeddings.detach().expand(batch, -1, -1)
    latents = torch.randn(batch, 4, latent, latent, device=device)
    timesteps = torch.randint(0, 1000, (batch,))
    parameters = list(backbone.parameter_groups()["unet"].values())
    times = {variant: [] for variant in VARIANTS}
    peaks = {variant: None for variant in VARIANTS}
    for index in range(repeats + 1):  # one warm-up round
        for variant in VARIANTS:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = one_step(backbone, variant, prompt, text, latents, timesteps, parameters, amp)
            if device.type == "cuda":
                peaks[variant] = max(peaks[variant] or 0.0, torch.cuda.max_memory_allocated() / 2**20)
            if index:
                times[variant].append(seconds)
    return {variant: (statistics.median(times[variant]), peaks[variant]) for variant in VARIANTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="an SD1.x/SD2.x single-file checkpoint (default: the tiny random test checkpoint)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--latent", type=int, default=16, help="latent side (512 px images give 64)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--amp", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on")
    parser.add_argument("--cpu", action="store_true", help="force ComfyUI onto the CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    comfy_sd = import_comfyui(force_cpu=args.cpu)
    from steer.nodes.comfy_personalize import ComfyBackbone

    path = Path(args.checkpoint) if args.checkpoint else tiny_checkpoint()
    with torch.inference_mode():
        model, clip, vae = comfy_sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True, embedding_directory=None)[:3]
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    with torch.inference_mode(False), torch.enable_grad(), ComfyBackbone(model, clip, vae) as backbone:
        backbone.reset_token("dog")
        for parameter in backbone.parameter_groups()["unet"].values():
            parameter.requires_grad_(True)
        backbone.set_gradient_checkpointing(args.checkpointing)
        results = measure(backbone, args.batch, args.latent, args.repeats, amp)
        architecture, device = backbone.architecture, backbone.device
    print(f"ComfyUI backend: {path.name} ({architecture}), batch {args.batch}, latent {args.latent}², {device}, {args.amp}, "
          f"checkpointing {args.checkpointing}, median of {args.repeats}")
    for variant, (seconds, peak) in results.items():
        memory = f", peak {peak:.0f} MiB" if peak is not None else ""
        print(f"  {variant:9s} {seconds * 1000:8.1f} ms/step  ×{seconds / results['plain'][0]:.2f}{memory}")


if __name__ == "__main__":
    main()
