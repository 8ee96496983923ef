"""Resident memory of AttnDreamBooth training, stage by stage, through the ComfyUI backend on a full-width SDXL
relative: the random Segmind Vega UNet (random_vega.py, 745 M parameters, the SDXL model class), a random SDXL-width
CLIP (CLIP-L 768 and CLIP-G 1280 wide, three layers each) and the SD VAE, on the CPU. Each plan runs in its own
process; next to each measurement it prints what the README's accounting predicts from the parameter counts:

- float32 trainable copies: 4 bytes for each UNet weight a stage of the plan trains (all of them with stage 3,
  the cross-attention ones without it);
- a stage: 12 bytes for each parameter it trains (the float32 gradient and AdamW's two moments).

Activations at the test size (64 px, batch 1, gradient checkpointing) are small next to these. On the CPU ComfyUI
keeps the loaded UNet in float32, so the measured baseline is larger than a GPU's fp16 one; the increments are what
the accounting predicts. Nothing is downloaded.

    COMFYUI_PATH=/opt/ComfyUI steer bench training-memory      (or python -m steer.benchmarks.personalize_memory)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

PLANS = {"with_stage_3": (1, 1, 1), "without_stage_3": (1, 1, 0)}  # steps of stages 1, 2, 3
RESOLUTION = 64
MB = 2**20
RESULTS = Path(__file__).with_name("results")


def _sdxl_width_clip():
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .comfy_tiny_sdxl import comfy_sdxl_clip

    def config(width, heads):
        return CLIPTextConfig(
            vocab_size=49408,
            hidden_size=width,
            intermediate_size=1024,
            num_hidden_layers=3,
            num_attention_heads=heads,
            max_position_embeddings=77,
            projection_dim=width,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )

    torch.manual_seed(0)
    return comfy_sdxl_clip(CLIPTextModel(config(768, 12)), CLIPTextModelWithProjection(config(1280, 20)))


def measure_plan(plan_name: str) -> dict:
    """Run in a fresh process: load, open, train one step per stage of the plan, and report the memory."""
    from ..cli.comfy_bootstrap import import_comfyui

    comfy_sd = import_comfyui(force_cpu=True)
    import comfy.model_management

    from ..nodes.comfy_personalize import ComfyBackbone
    from ..personalize.stages import custom_plan
    from ..personalize.trainer import RuntimeOptions, train
    from .peak_memory import PeakRSS
    from .personalize_timing import bench_images
    from .random_families import build_vae
    from .random_vega import vega_unet_file

    torch.set_num_threads(2)
    token_steps, cross_attention_steps, unet_steps = PLANS[plan_name]
    plan = custom_plan(
        token_steps=token_steps,
        cross_attention_steps=cross_attention_steps,
        unet_steps=unet_steps,
        token_batch_size=1,
        cross_attention_batch_size=1,
        unet_batch_size=1,
        resolution=RESOLUTION,
    )
    with torch.inference_mode():
        model = comfy_sd.load_diffusion_model(str(vega_unet_file()))
    clip, vae = _sdxl_width_clip(), build_vae(4)
    parameters = dict(model.model.diffusion_model.named_parameters())
    total = sum(p.numel() for p in parameters.values())
    cross_attention = sum(p.numel() for name, p in parameters.items() if ".attn2." in name)
    images = bench_images(RESOLUTION)
    stage_peaks: dict[str, int] = {}

    def progress(stage, done, steps, loss):
        # Everything since the previous step (the stage's set-up included) belongs to this step's stage.
        stage_peaks[stage] = max(stage_peaks.get(stage, 0), sampler.take())

    with torch.inference_mode(False), torch.enable_grad(), PeakRSS() as sampler:
        backbone = ComfyBackbone(model, clip, vae, trained_groups=plan.trained_groups)
        backbone.cache_latents(images.all_views())
        comfy.model_management.load_models_gpu([model], force_full_load=True)
        baseline = sampler.process.memory_info().rss
        with backbone:
            opened = sampler.process.memory_info().rss
            sampler.take()
            train(backbone, images, "dog", plan, seed=0, options=RuntimeOptions(precision="fp32"), progress=progress)
    copies = total if plan.stage("unet").steps else cross_attention
    trained_by = {"token": 0, "cross_attention": cross_attention, "unet": total}
    stages = {}
    for stage, peak in stage_peaks.items():
        stages[stage] = {"predicted_mb": 12 * trained_by[stage] / MB, "measured_mb": (peak - opened) / MB}
    return {
        "plan": plan_name,
        "unet_parameters": total,
        "cross_attention_parameters": cross_attention,
        "copies": {"predicted_mb": 4 * copies / MB, "measured_mb": (opened - baseline) / MB},
        "stages": stages,
    }


def markdown(reports: list[dict]) -> str:
    first = reports[0]
    lines = [
        "# AttnDreamBooth training memory, measured against the accounting",
        "",
        "`steer bench training-memory` (benchmarks/personalize_memory.py): resident memory on the CPU, one process per plan.",
        f"Segmind Vega UNet (random weights, the SDXL model class): {first['unet_parameters'] / 1e6:.0f} M parameters, "
        f"{first['cross_attention_parameters'] / 1e6:.0f} M in cross-attention; {RESOLUTION} px, batch 1, fp32, gradient checkpointing on.",
        "Predicted: 4 bytes per trainable copy; 12 bytes per parameter a stage trains (gradient and AdamW's two moments).",
        "The measured stage peaks also hold the step's activations and comfy.ops' per-layer weight copies.",
        "",
        "| plan | what | predicted (MB) | measured (MB) | measured / predicted |",
        "| --- | --- | --- | --- | --- |",
    ]
    for report in reports:
        rows = [("float32 trainable copies", report["copies"])]
        rows += [(f"stage {stage}: peak over the copies", numbers) for stage, numbers in report["stages"].items()]
        for what, numbers in rows:
            ratio = f"{numbers['measured_mb'] / numbers['predicted_mb']:.2f}" if numbers["predicted_mb"] else "–"
            lines.append(f"| {report['plan']} | {what} | {numbers['predicted_mb']:.0f} | {numbers['measured_mb']:.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def execute(args) -> int:
    from ..safe_files import StagedFiles

    reports = []
    for plan_name in PLANS:
        completed = subprocess.run(
            [sys.executable, "-m", __spec__.name, "--one", plan_name], env=dict(os.environ), capture_output=True, text=True
        )
        if completed.returncode != 0:
            raise SystemExit(f"the {plan_name} run failed:\n{completed.stderr[-4000:]}")
        line = next(line for line in completed.stdout.splitlines() if line.startswith("MEMORY_REPORT "))
        reports.append(json.loads(line.removeprefix("MEMORY_REPORT ")))
    table = markdown(reports)
    print(table)
    out = Path(args.out) if args.out else RESULTS
    with StagedFiles() as files:
        files.bytes(out / "personalize_memory.md", table.encode())
    print(f"wrote {out / 'personalize_memory.md'}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", choices=sorted(PLANS), help="measure one plan in this process and print its report as JSON")
    parser.add_argument("--out", type=Path, help="write personalize_memory.md here (default: the package's benchmarks/results)")
    args = parser.parse_args()
    if args.one:
        print("MEMORY_REPORT " + json.dumps(measure_plan(args.one)))
        return
    execute(args)


if __name__ == "__main__":
    main()
