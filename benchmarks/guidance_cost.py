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
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from ..guidance.augment import AugmentConfig, RandomAugment, augmented_loss
from ..guidance.config import DEFAULT_PRESET, PRESETS, GuidanceConfig, TimeTravel
from ..errors import SteerError
from .arguments import add_guidance_bench_arguments
from ..guidance.losses.base import Window

# ComfyUI's detected-config form of the SD1.5 UNet (what model_detection returns for a v1-5 checkpoint).
SD15_UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None,
    "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
    "use_temporal_resblock": False, "use_temporal_attention": False,
}
# CLIP ViT-B/16, the guidance network of Shen et al.'s Table 6 (5.5 % for |T| = 10).
CLIP_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=16, projection_dim=512)
CFG = 7.5
AUGMENT_COPIES = 10
EVERY_STEP = Window(0.0, 1.0)


def guided(**changes) -> GuidanceConfig:
    """A guided step with nothing on but what is asked: every step guided, no time travel, no augmentation."""
    base = GuidanceConfig(step_rule="polyak", window=EVERY_STEP, time_travel=TimeTravel(repeats=1), augment=AugmentConfig(copies=0))
    return dataclasses.replace(base, **changes)


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    config: GuidanceConfig | None  # None: the stock euler sampler, unguided
    loss_decoder: str = "vae"
    checkpointing: bool = True
    naive_augment: int = 0  # > 0: the loss scores that many augmented views one call at a time


def default_preset_config() -> GuidanceConfig:
    return dataclasses.replace(PRESETS[DEFAULT_PRESET], window=EVERY_STEP, time_travel=TimeTravel(repeats=1))


MODES = {
    "unguided": Mode("unguided CFG step (euler)", None),
    "unguided_clone": Mode("unguided, through ComfyUI's differentiable weights (weight-wrapper copies)", guided(gradient_path="through_model", scale=0.0)),
    "through_positive": Mode("through the model, positive branch", guided(gradient_path="through_model", cfg_gradient="positive")),
    "through_combined": Mode("through the model, combined CFG", guided(gradient_path="through_model", cfg_gradient="combined")),
    "through_positive_nockpt": Mode("through the model, positive branch, no checkpointing", guided(gradient_path="through_model"), checkpointing=False),
    "x0_vae": Mode("x0 shortcut, full VAE decoder", guided(gradient_path="x0_shortcut")),
    "x0_vae_nockpt": Mode("x0 shortcut, full VAE decoder, no checkpointing", guided(gradient_path="x0_shortcut"), checkpointing=False),
    "x0_taesd": Mode("x0 shortcut, TAESD decoder", guided(gradient_path="x0_shortcut"), loss_decoder="taesd"),
    "through_positive_aug": Mode(f"through the model, positive branch, |T| = {AUGMENT_COPIES}", guided(gradient_path="through_model", augment=AugmentConfig(copies=AUGMENT_COPIES))),
    "x0_taesd_aug": Mode(f"x0 shortcut, TAESD decoder, |T| = {AUGMENT_COPIES}", guided(gradient_path="x0_shortcut", augment=AugmentConfig(copies=AUGMENT_COPIES)), loss_decoder="taesd"),
    "default": Mode(f"Steer's default preset ({DEFAULT_PRESET})", default_preset_config()),
    "naive": Mode(
        f"naive: full VAE, combined CFG, |T| = {AUGMENT_COPIES} one at a time, no checkpointing",
        guided(gradient_path="through_model", cfg_gradient="combined"), checkpointing=False, naive_augment=AUGMENT_COPIES,
    ),
}
MEMORY_MODES = ("unguided", "through_positive", "through_positive_nockpt", "x0_vae", "x0_vae_nockpt", "x0_taesd")


class NaiveAugmentedLoss:
    """The loss over `copies` augmented views, scored one view per loss call (what a straightforward
    implementation does), averaged. Steer itself batches the views through one call."""

    def __init__(self, loss, copies: int):
        self.loss, self.copies, self.name = loss, copies, loss.name
        self.augment = RandomAugment(AugmentConfig(copies=1))

    def __call__(self, images):
        return sum(augmented_loss(self.loss, images, self.augment) for _ in range(self.copies)) / self.copies


class Bench:
    """The models, built once: ComfyUI's patcher and VAE, the CLIP loss, conditioning and latents."""

    def __init__(self, latent: int, workdir: Path):
        comfy_sd()
        import comfy.model_management
        import comfy.samplers
        import comfy.sd
        import folder_paths

        self.comfy_sd, self.samplers, self.mm = comfy.sd, comfy.samplers, comfy.model_management
        from . import random_checkpoints as fixture
        import comfy as comfy_pkg
        import comfy.ldm.models.autoencoder  # noqa: F401  (the fixture builders reach these as comfy_pkg.*)
        import comfy.ldm.modules.diffusionmodules.openaimodel  # noqa: F401
        import comfy.model_detection  # noqa: F401
        import comfy.ops  # noqa: F401
        import comfy.supported_models  # noqa: F401

        began = time.perf_counter()
        torch.manual_seed(0)
        self.model = self._build_unet(comfy_pkg, fixture)
        self.unet_parameters = sum(p.numel() for p in self.model.model.diffusion_model.parameters())
        torch.manual_seed(1)
        vae_sd = {k.removeprefix("first_stage_model."): v for k, v in fixture.build_vae_state_dict(comfy_pkg).items()}
        self.vae = comfy.sd.VAE(sd=vae_sd)
        del vae_sd
        self._write_taesd(comfy_pkg, fixture, workdir / "vae_approx")
        folder_paths.add_model_folder_path("vae_approx", str(workdir / "vae_approx"))
        self.loss = self._clip_loss(workdir / "clip_b16")
        self.build_seconds = time.perf_counter() - began

        device = self.mm.get_torch_device()
        generator = torch.Generator().manual_seed(0)
        self.positive = [[torch.randn(1, 77, 768, generator=generator), {}]]
        self.negative = [[torch.randn(1, 77, 768, generator=generator), {}]]
        self.noise = torch.randn(1, 4, latent, latent, generator=generator)
        self.latent = torch.zeros(1, 4, latent, latent)
        schedule = comfy.samplers.calculate_sigmas(self.model.get_model_object("model_sampling"), "normal", 20).cpu()
        self.sigmas = schedule[8:11]  # two steps from the middle of a 20-step schedule
        self.device = device

    def _build_unet(self, comfy_pkg, fixture):
        model_config = comfy_pkg.model_detection.model_config_from_unet_config(dict(SD15_UNET_CONFIG))
        unet = comfy_pkg.ldm.modules.diffusionmodules.openaimodel.UNetModel(**model_config.unet_config, operations=comfy_pkg.ops.disable_weight_init)
        fixture.init_randomly(unet)
        state = unet.state_dict()
        del unet
        patcher = self.comfy_sd.load_diffusion_model_state_dict(state)
        if patcher is None or type(patcher.model.model_config).__name__ != "SD15":
            raise SteerError("ComfyUI did not detect the benchmark UNet as SD1.5")
        return patcher

    @staticmethod
    def _write_taesd(comfy_pkg, fixture, folder: Path):
        from comfy.taesd.taesd import Decoder
        from safetensors.torch import save_file

        torch.manual_seed(2)
        decoder = Decoder(latent_channels=4)
        fixture.init_randomly(decoder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(folder / "taesd_decoder.safetensors"))

    @staticmethod
    def _clip_loss(folder: Path):
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        from ..guidance.hf_models import load_guidance_model
        from ..guidance.losses.clip import CLIPImageLoss, HFCLIPEncoder

        torch.manual_seed(3)
        folder.mkdir(parents=True, exist_ok=True)
        CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_B16)).eval().save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 224},
            "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": [0.4815, 0.4578, 0.4082], "image_std": [0.2686, 0.2613, 0.2758], "resample": 3,
        }))
        encoder = HFCLIPEncoder(load_guidance_model(folder, precision="auto"))
        return CLIPImageLoss(encoder, torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(4)))

    def sampler(self, mode: Mode):
        if mode.config is None:
            return self.samplers.sampler_object("euler")
        from ..guidance.trace import GuidanceTrace
        from ..nodes.comfy_guidance import make_sampler

        loss = NaiveAugmentedLoss(self.loss, mode.naive_augment) if mode.naive_augment else self.loss
        return make_sampler(self.vae, loss, mode.config, GuidanceTrace(label=mode.name), loss_decoder=mode.loss_decoder, checkpointing=mode.checkpointing)

    def seconds_per_step(self, mode: Mode) -> float:
        guider = self.samplers.CFGGuider(self.model)
        guider.set_conds(self.positive, self.negative)
        guider.set_cfg(CFG)
        sampler = self.sampler(mode)
        with torch.inference_mode():
            _synchronize(self.device)
            began = time.perf_counter()
            guider.sample(self.noise, self.latent, sampler, self.sigmas, disable_pbar=True, seed=0)
            _synchronize(self.device)
        return (time.perf_counter() - began) / (len(self.sigmas) - 1)


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
                _synchronize(device)
                began = time.perf_counter()
                run()
                _synchronize(device)
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


def _synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


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


class PeakRSS:
    """Samples this process's resident set every few milliseconds while open."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def measure_cpu_memory(name: str, latent: int, threads: int) -> dict:
    """Peak RSS of one step of `name` in a fresh process (a process's freed memory stays mapped)."""
    command = [sys.executable, "-m", "steer.benchmarks.guidance_cost", "--memory-probe", name, "--latent", str(latent), "--threads", str(threads)]
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


NEEDS_COMFYUI = "steer bench runs the models through ComfyUI's own loaders and samplers: set COMFYUI_PATH to a ComfyUI checkout"


def comfy_sd():
    from ..cli.comfy_bootstrap import import_comfyui

    return import_comfyui(missing=NEEDS_COMFYUI)


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


def _median_ratio(times, name, baseline="unguided") -> float:
    return statistics.median(times[name]) / statistics.median(times[baseline])


def build_rows(times: dict, memory: dict | None, training: dict | None, floor: dict | None = None) -> list[dict]:
    floor = floor or {}

    def row(mode, ratio, target, kind="time ratio to an unguided CFG step", lower_is_better=True, note="", floor_key=None):
        met = None if ratio is None or target is None else (ratio <= target if lower_is_better else ratio >= target)
        bound = floor.get(floor_key)
        return {"mode": mode, "measure": kind, "ratio": None if ratio is None else round(ratio, 3), "target": target, "met": met,
                "floor": None if bound is None else round(bound, 3), "note": note}

    rows = [
        row(MODES["unguided"].name, 1.0, 1.0, note=f"{statistics.median(times['unguided']):.2f} s/step"),
        row(MODES["through_positive"].name, _median_ratio(times, "through_positive"), 3.0, floor_key="through_positive"),
        row(MODES["unguided_clone"].name, _median_ratio(times, "unguided_clone"), None, note="part of every through-the-model step"),
        row(MODES["through_combined"].name, _median_ratio(times, "through_combined"), 3.5, floor_key="through_combined"),
        row(MODES["x0_vae"].name, _median_ratio(times, "x0_vae"), 1.8, floor_key="x0_vae"),
        row(MODES["x0_taesd"].name, _median_ratio(times, "x0_taesd"), 1.15, floor_key="x0_taesd"),
        row(f"random augmentation |T| = {AUGMENT_COPIES}, through the model", _median_ratio(times, "through_positive_aug", "through_positive") - 1, 0.10,
            kind="extra time over the same step without it", floor_key="augmentation_through_model"),
        row(f"random augmentation |T| = {AUGMENT_COPIES}, x0 shortcut + TAESD", _median_ratio(times, "x0_taesd_aug", "x0_taesd") - 1, 0.10,
            kind="extra time over the same step without it", floor_key="augmentation_x0_taesd"),
        row("checkpointing, through the model", _median_ratio(times, "through_positive", "through_positive_nockpt") - 1, None,
            kind="extra time over the same step without it"),
        row("checkpointing, x0 shortcut", _median_ratio(times, "x0_vae", "x0_vae_nockpt") - 1, None, kind="extra time over the same step without it"),
        row(f"Steer's default ({DEFAULT_PRESET}) over the naive reference", _median_ratio(times, "naive", "default"), None,
            kind="speed-up", lower_is_better=False),
        row(f"Steer's paper method (positive branch, batched |T| = {AUGMENT_COPIES}) over the naive reference",
            _median_ratio(times, "naive", "through_positive_aug"), None, kind="speed-up", lower_is_better=False),
    ]
    if memory:
        base = memory["unguided"]
        for name in MEMORY_MODES[1:]:
            target = 2.0 if MODES[name].checkpointing else None
            rows.append(row(MODES[name].name, memory[name] / base, target, kind="peak memory over unguided", note=f"{memory[name]:.0f} MiB vs {base:.0f} MiB"))
    if training:
        rows.append(row("AttnDreamBooth step over a plain diffusion-loss step (tiny test checkpoint)", training["time"], 1.15, kind="time ratio"))
        if training["memory"] is not None:
            rows.append(row("AttnDreamBooth step over a plain diffusion-loss step (tiny test checkpoint)", training["memory"], 1.15, kind="peak memory ratio"))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| Mode | Measure | Ratio | Floor | Target | Met |", "| --- | --- | --- | --- | --- | --- |"]

    def number(value, measure):
        if value is None:
            return "—"
        return f"{value * 100:+.1f} %" if measure.startswith("extra") else f"{value:.2f}"

    for r in rows:
        ratio, bound = number(r["ratio"], r["measure"]), number(r.get("floor"), r["measure"])
        target = "—" if r["target"] is None else (f"≤ {r['target'] * 100:.0f} %" if r["measure"].startswith("extra") else f"≤ {r['target']}")
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['mode']}{note} | {r['measure']} | {ratio} | {bound} | {target} | {met} |")
    return "\n".join(lines)


def machine() -> str:
    if torch.cuda.is_available():
        return f"CUDA {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"


def execute(args) -> int:
    torch.set_num_threads(args.threads)
    log = (lambda text: print(text, file=sys.stderr, flush=True)) if not args.quiet else (lambda text: None)
    names = list(MODES)
    with tempfile.TemporaryDirectory(prefix="steer-bench-") as tmp:
        bench = Bench(args.latent, Path(tmp))
        log(f"built SD1.5 UNet ({bench.unet_parameters / 1e6:.0f} M parameters), SD VAE, CLIP ViT-B/16, TAESD in {bench.build_seconds:.0f} s; "
            f"latent {args.latent}² (images {args.latent * 8} px), batch 1, CFG {CFG}, on {bench.device}")
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
    print(f"Steer guidance cost: {machine()}; SD1.5 UNet + SD VAE at latent {args.latent}² (random weights), CLIP ViT-B/16 loss; "
          f"median of {args.repeats} repeats, modes interleaved")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "machine": machine(), "latent": args.latent, "repeats": args.repeats,
                                         "seconds_per_step": {k: v for k, v in times.items()}, "component_seconds": components, "memory_mib": memory, "rows": rows}, indent=2) + "\n")
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
