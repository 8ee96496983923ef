"""`steer bench`: what a guided step costs, as ratios to an unguided CFG step measured in the same run.

Setup (nothing is downloaded): a full-size SD1.5 UNet (860 M parameters) and the SD VAE with random
weights, built from their configs and loaded through ComfyUI's own loaders (COMFYUI_PATH); a
CLIP ViT-B/16 vision tower (the paper's guidance network size) as the loss model; a random TAESD
decoder in a temporary vae_approx folder. Every mode runs the real ComfyUI path: CFGGuider.sample
with the stock euler sampler (baseline) or Steer's guided sampler, on the same latent and sigmas.
Modes take turns repeat by repeat, so a change in machine load hits all of them alike; each figure
is the median over repeats.

Memory: on CUDA, torch.cuda.max_memory_allocated per mode in this process. On the CPU, the peak
resident set of a fresh process that builds the models and runs one step of the mode (weights
included, as on a GPU).

    COMFYUI_PATH=/opt/ComfyUI steer bench [--json FILE] [--repeats 3] [--latent 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..errors import SteerError
from ..guidance.augment import AugmentConfig, augmented_loss
from .arguments import add_guidance_bench_arguments
from .clock import synchronize
from .guidance_cost_modes import AUGMENT_COPIES, MEMORY_MODES, MODES
from .guidance_cost_setup import CFG, Bench, comfy_sd
from .guidance_cost_table import build_rows, markdown
from .peak_memory import PeakRSS


def measure_components(bench: Bench, repeats: int, log) -> dict[str, float]:
    """Seconds for each part of a guided step alone (median of repeats): the physical floor of each mode
    is the sum of its parts, with no sampler, copy or checkpointing overhead."""
    from ..guidance.augment import RandomAugment
    from ..nodes.comfy_guidance import make_decoder, make_tiny_decoder

    latent_format = bench.model.model.latent_format
    diffusion_model = bench.model.model.diffusion_model
    device = bench.mm.get_torch_device()
    bench.mm.load_models_gpu([bench.model, bench.vae.patcher])
    dtype = bench.model.model.get_dtype()
    x = bench.noise.to(device=device, dtype=dtype)
    context = bench.positive[0][0].to(device=device, dtype=dtype)
    timestep = torch.tensor([500.0], device=device)
    decode_vae = make_decoder(bench.vae, latent_format)
    decode_tiny = make_tiny_decoder(latent_format, device, bench.vae.vae_dtype)
    augment = RandomAugment(AugmentConfig(copies=AUGMENT_COPIES))

    def unet_forward():
        with torch.no_grad():
            diffusion_model(x, timestep, context=context)

    def decoder_and_loss(decode, copies=0):
        def run():
            z = x.float().detach().requires_grad_(True)
            with torch.enable_grad():
                images = decode(z)
                values = augmented_loss(bench.loss, images, augment if copies else None)
                torch.autograd.grad(values.sum(), z)

        return run

    def loss_only(copies=0):
        images = torch.rand(1, 3, x.shape[-2] * 8, x.shape[-1] * 8, device=device)

        def run():
            leaf = images.clone().requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(augmented_loss(bench.loss, leaf, augment if copies else None).sum(), leaf)

        return run

    parts = {
        "unet_forward_one_branch": unet_forward,
        "vae_decoder_and_loss_fwd_bwd": decoder_and_loss(decode_vae),
        "taesd_decoder_and_loss_fwd_bwd": decoder_and_loss(decode_tiny),
        "loss_fwd_bwd": loss_only(),
        f"loss_fwd_bwd_{AUGMENT_COPIES}_views": loss_only(AUGMENT_COPIES),
    }
    seconds = {}
    with torch.inference_mode(False):
        for name, run in parts.items():
            samples = []
            for index in range(repeats + 1):
                synchronize(device)
                began = time.perf_counter()
                run()
                synchronize(device)
                if index:
                    samples.append(time.perf_counter() - began)
            seconds[name] = statistics.median(samples)
            log(f"  component {name:34s} {seconds[name]:7.2f} s")
    return seconds


def floors(components: dict[str, float], unguided_step: float) -> dict[str, float]:
    """Each mode's floor as a ratio to the unguided CFG step S (two branches in one batch): the sum of its
    parts, measured alone, with a backward pass counted as 2 forwards of the same part. U is one
    branch alone (batch 1); on a CPU two batched branches cost much less than 2U, on a GPU about 2U."""
    s, u = unguided_step, components["unet_forward_one_branch"]
    vae, tiny, loss = components["vae_decoder_and_loss_fwd_bwd"], components["taesd_decoder_and_loss_fwd_bwd"], components["loss_fwd_bwd"]
    views = components[f"loss_fwd_bwd_{AUGMENT_COPIES}_views"]
    through_positive = u + 3 * u + vae  # negative branch without a graph + positive forward and backward + decoder/loss
    return {
        "through_positive": through_positive / s,
        "through_combined": (3 * s + vae) / s,
        "x0_vae": (s + vae) / s,
        "x0_taesd": (s + tiny) / s,
        "augmentation_through_model": (views - loss) / through_positive,
        "augmentation_x0_taesd": (views - loss) / (s + tiny),
    }


def measure_times(bench: Bench, names: list[str], repeats: int, log) -> dict[str, list[float]]:
    times = {name: [] for name in names}
    for round_index in range(repeats + 1):  # round 0 warms up (first-call allocations, model loading)
        for name in names:
            seconds = bench.seconds_per_step(MODES[name])
            if round_index:
                times[name].append(seconds)
            log(f"  round {round_index}/{repeats}  {name:26s} {seconds:7.2f} s/step{'  (warm-up)' if not round_index else ''}")
    return times


def measure_cuda_memory(bench: Bench, names: list[str]) -> dict[str, float]:
    peaks = {}
    for name in names:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        bench.seconds_per_step(MODES[name])
        peaks[name] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


def measure_cpu_memory(name: str, latent: int, threads: int) -> dict:
    """Peak RSS of one step of `name` in a fresh process (a process's freed memory stays mapped)."""
    command = [
        sys.executable,
        "-m",
        "steer.benchmarks.guidance_cost",
        "--memory-probe",
        name,
        "--latent",
        str(latent),
        "--threads",
        str(threads),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=3600)
    if completed.returncode != 0:
        raise SteerError(f"memory probe for {name} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def memory_probe(name: str, latent: int) -> None:
    import psutil

    with tempfile.TemporaryDirectory(prefix="steer-bench-") as tmp:
        bench = Bench(latent, Path(tmp))
        resident = psutil.Process().memory_info().rss
        with PeakRSS() as peak:
            bench.seconds_per_step(MODES[name])
    print(json.dumps({"mode": name, "before_mib": resident / 2**20, "peak_mib": peak.peak / 2**20}))


def training_ratio(repeats: int, log) -> dict | None:
    """AttnDreamBooth's real training step (regularizer capture) over a plain diffusion-loss step,
    ComfyUI backend, on the tiny random checkpoint (personalize_step_comfy.py)."""
    from .personalize_step_comfy import measure_checkpoint
    from .random_checkpoints import tiny_sd15_checkpoint

    comfy_sd()  # the bench's own message when COMFYUI_PATH is missing
    results, _, _ = measure_checkpoint(tiny_sd15_checkpoint(), batch=2, latent=16, repeats=repeats, amp=None, checkpointing=True)
    plain, capture = results["plain"], results["capture"]
    log(f"  training: plain {plain[0] * 1000:.0f} ms/step, AttnDreamBooth {capture[0] * 1000:.0f} ms/step")
    return {
        "time": capture[0] / plain[0],
        "memory": capture[1] / plain[1] if plain[1] else None,
    }


def machine() -> str:
    if torch.cuda.is_available():
        return f"CUDA {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}"
    )


def execute(args) -> int:
    torch.set_num_threads(args.threads)
    log = (lambda text: print(text, file=sys.stderr, flush=True)) if not args.quiet else (lambda text: None)
    names = list(MODES)
    with tempfile.TemporaryDirectory(prefix="steer-bench-") as tmp:
        bench = Bench(args.latent, Path(tmp))
        log(
            f"built SD1.5 UNet ({bench.unet_parameters / 1e6:.0f} M parameters), SD VAE, CLIP ViT-B/16, TAESD in "
            f"{bench.build_seconds:.0f} s; "
            f"latent {args.latent}² (images {args.latent * 8} px), batch 1, CFG {CFG}, on {bench.device}"
        )
        times = measure_times(bench, names, args.repeats, log)
        components = measure_components(bench, args.repeats, log)
        floor = floors(components, statistics.median(times["unguided"]))
        memory = None
        if not args.no_memory and torch.device(bench.device).type == "cuda":
            memory = measure_cuda_memory(bench, list(MEMORY_MODES))
        device = str(bench.device)
        del bench
    if not args.no_memory and memory is None:
        memory = {}
        for name in MEMORY_MODES:
            probe = measure_cpu_memory(name, args.latent, args.threads)
            memory[name] = probe["peak_mib"]
            log(f"  memory {name:26s} peak {probe['peak_mib']:.0f} MiB (before the step {probe['before_mib']:.0f} MiB)")
    training = None if args.no_training else training_ratio(args.repeats, log)
    rows = build_rows(times, memory, training, floor)
    print(
        f"Steer guidance cost: {machine()}; SD1.5 UNet + SD VAE at latent {args.latent}² (random weights), CLIP ViT-B/16 loss; "
        f"median of {args.repeats} repeats, modes interleaved"
    )
    print(markdown(rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": device,
                    "machine": machine(),
                    "latent": args.latent,
                    "repeats": args.repeats,
                    "seconds_per_step": {k: v for k, v in times.items()},
                    "component_seconds": components,
                    "memory_mib": memory,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_guidance_bench_arguments(parser)
    parser.add_argument("--memory-probe", choices=MEMORY_MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        torch.set_num_threads(args.threads)
        memory_probe(args.memory_probe, args.latent)
        return 0
    return execute(args)


if __name__ == "__main__":
    sys.exit(main())
