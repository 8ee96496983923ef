"""Train the world model, its guides and its judge; write weights, sample grids and MODEL_CARD.md.

    python -m steer.world.train --out world/weights            # every stage, in order
    python -m steer.world.train --out world/weights --stage vae

Stages: vae, generator (tokenizer + text encoder + UNet), generator_more (a second, lower-lr
schedule from the first's weights), tiny_decoder (needs vae), classifier,
clip, judge, card. Each is seeded and writes its facts to training.json, which the card is made from.
For a given thread count each stage is bitwise reproducible, with one exception: the tokenizers
(generator, clip) come from Hugging Face's BPE trainer, which breaks frequency ties in hash order,
so a rerun may number the words differently and then trains different (equally good) weights.
About 60-70 minutes on 2 CPU cores in all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import model as wm
from .data import COUNTS, load_split
from .training_loop import FACTS_FILE, batches, count_parameters, fit, log, record

STAGES = ("vae", "generator", "generator_more", "tiny_decoder", "classifier", "clip", "judge", "card")
# ----------------------------------------------------------------------------------------
# VAE
# ----------------------------------------------------------------------------------------


def train_vae(out: Path, steps: int = 1500, batch: int = 32) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    data = load_split("generator", COUNTS["generator"])
    vae = AutoencoderKL(**wm.VAE_CONFIG)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(1)
    order = batches(len(data.images), batch, generator)
    start = time.time()

    def batch_loss(step):
        x = data.images[next(order)] * 2 - 1
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        mse = F.mse_loss(recon, x)
        return mse + 0.5 * F.l1_loss(recon, x) + 1e-6 * posterior.kl().mean(), float(mse)

    running = fit("vae (mse)", optimizer, steps, batch_loss, peak_lr=1e-3, warmup=100, clip_norm=1.0)
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(data.images[i : i + 500] * 2 - 1).latent_dist.mean for i in range(0, 4000, 500)])
        heldout = load_split("heldout", COUNTS["heldout"])
        recon = vae.decode(vae.encode(heldout.images * 2 - 1).latent_dist.mean).sample * 0.5 + 0.5
        heldout_mse = float(F.mse_loss(recon.clamp(0, 1), heldout.images))
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    record(
        out,
        "vae",
        {
            "steps": steps,
            "batch": batch,
            "parameters": count_parameters(vae),
            "train_mse": running,
            "heldout_mse": heldout_mse,
            "scaling_factor": scaling,
            "seconds": time.time() - start,
        },
    )
    log(f"vae done: heldout mse {heldout_mse:.5f}, scaling factor {scaling:.4f}")


# ----------------------------------------------------------------------------------------
# Generator: tokenizer + text encoder + UNet, trained together on cached latents
# ----------------------------------------------------------------------------------------


def _encode_all(vae, images: torch.Tensor, scaling: float) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([vae.encode(images[i : i + 500] * 2 - 1).latent_dist.mean for i in range(0, len(images), 500)]) * scaling


def train_generator(out: Path, steps: int = 5000, batch: int = 96, drop: float = 0.1, resume: bool = False, peak_lr: float = 1e-3) -> None:
    """resume: continue from the UNet and text encoder in `out` (a second schedule of `steps`)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(2)
    tokenizer = wm.build_tokenizer(out / "tokenizer")
    previous = json.loads((out / FACTS_FILE).read_text()).get("generator") if resume else None
    if resume:
        text_encoder = CLIPTextModel.from_pretrained(out / "text_encoder", use_safetensors=True)
        unet = UNet2DConditionModel.from_pretrained(out / "unet", use_safetensors=True)
        torch.manual_seed(3)
    else:
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **wm.TEXT_CONFIG,
            )
        )
        unet = UNet2DConditionModel(**wm.UNET_CONFIG)
    text_encoder.train()
    unet.train()
    scheduler = DDPMScheduler(**wm.SCHEDULER_CONFIG)
    vae = AutoencoderKL.from_pretrained(out / "vae", use_safetensors=True).eval()
    data = load_split("generator", COUNTS["generator"])
    latents = _encode_all(vae, data.images, float(vae.config.scaling_factor))
    log(f"generator: {len(latents)} latents cached, std {float(latents.std()):.3f}")
    rng = np.random.default_rng(3 if resume else 2)
    from .scene import PHRASINGS, caption

    all_ids = {}
    for phrasing in range(PHRASINGS):
        texts = [caption(s, phrasing) for s in data.scenes]
        all_ids[phrasing] = tokenizer(texts, padding="max_length", max_length=wm.MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
    empty_ids = tokenizer([""], padding="max_length", max_length=wm.MAX_TOKENS, return_tensors="pt").input_ids
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    alphas = scheduler.alphas_cumprod.float()
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 weighting of the eps loss
    generator = torch.Generator().manual_seed(3 if resume else 2)
    order = batches(len(latents), batch, generator)
    start = time.time()

    def batch_loss(step):
        idx = next(order)
        phrasing = torch.from_numpy(rng.integers(PHRASINGS, size=len(idx)))
        ids = torch.stack([all_ids[int(p)][int(i)] for p, i in zip(phrasing, idx)])
        dropped = torch.rand(len(idx), generator=generator) < drop
        ids[dropped] = empty_ids[0]
        x0 = latents[idx]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        eps = unet(xt, t, encoder_hidden_states=text_encoder(ids).last_hidden_state).sample
        per = (eps - noise).square().mean(dim=(1, 2, 3))
        return (per * weight[t]).mean(), float(per.mean())

    @torch.no_grad()
    def update_ema(step):
        decay = min(0.999, (1 + step) / (10 + step))
        for e, p in zip(ema, params):
            e.lerp_(p.detach(), 1 - decay)

    running = fit(
        "generator (eps-mse)", optimizer, steps, batch_loss, peak_lr=peak_lr, clip_norm=1.0, after_step=update_ema, smoothing=0.99
    )
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    scheduler.save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": _version("diffusers"),
                "vae": ["diffusers", "AutoencoderKL"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "scheduler": ["diffusers", "DDPMScheduler"],
                "safety_checker": [None, None],
                "feature_extractor": [None, None],
                "requires_safety_checker": False,
            },
            indent=1,
        )
    )
    schedules = (previous or {}).get("schedules", []) + [
        {"steps": steps, "peak_lr": peak_lr, "seconds": time.time() - start, "final_eps_mse": running}
    ]
    record(
        out,
        "generator",
        {
            "steps": sum(x["steps"] for x in schedules),
            "schedules": schedules,
            "batch": batch,
            "cfg_dropout": drop,
            "unet_parameters": count_parameters(unet),
            "text_encoder_parameters": count_parameters(text_encoder),
            "final_eps_mse": running,
            "loss": "eps-MSE, min-SNR-5 weighted",
            "ema": 0.999,
            "seconds": sum(x["seconds"] for x in schedules),
        },
    )


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


# ----------------------------------------------------------------------------------------
# Tiny decoder, distilled from the VAE decoder
# ----------------------------------------------------------------------------------------


def train_tiny_decoder(out: Path, steps: int = 1200, batch: int = 64) -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    torch.manual_seed(3)
    vae = AutoencoderKL.from_pretrained(out / "vae", use_safetensors=True).eval()
    scaling = float(vae.config.scaling_factor)
    data = load_split("generator", 8000)
    latents = _encode_all(vae, data.images, scaling)
    with torch.no_grad():
        targets = torch.cat([vae.decode(latents[i : i + 500] / scaling).sample for i in range(0, len(latents), 500)]) * 0.5 + 0.5
    tiny = wm.TinyDecoder()
    optimizer = torch.optim.AdamW(tiny.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(3)
    order = batches(len(latents), batch, generator)
    start = time.time()

    def batch_loss(step):
        idx = next(order)
        # Decoded x̂0 of noisy steps lie off the data latents: train on noised latents too.
        z = latents[idx] + torch.rand(len(idx), 1, 1, 1, generator=generator) * 0.3 * torch.randn(latents[idx].shape, generator=generator)
        with torch.no_grad():
            target = vae.decode(z / scaling).sample * 0.5 + 0.5
        loss = F.mse_loss(tiny(z), target)
        return loss, float(loss)

    fit("tiny decoder (mse)", optimizer, steps, batch_loss, peak_lr=2e-3, warmup=100, log_every=200)
    (out / "tiny_decoder").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(out / "tiny_decoder" / "tiny_decoder.safetensors"))
    with torch.no_grad():
        mse_clean = float(F.mse_loss(tiny(latents[:2000]), targets[:2000]))
    record(
        out,
        "tiny_decoder",
        {
            "steps": steps,
            "batch": batch,
            "parameters": count_parameters(tiny),
            "mse_to_vae_decoder": mse_clean,
            "seconds": time.time() - start,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steer.world.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=wm.MODEL_DIR)
    parser.add_argument("--stage", choices=STAGES + ("all",), default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--generator-steps", type=int, default=4500)
    parser.add_argument(
        "--generator-resume-steps", type=int, default=3000, help="a second schedule from the first's weights (stage generator_more)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    def guides_module():
        from . import train_guides

        return train_guides

    runners = {
        "vae": lambda: train_vae(args.out),
        "generator": lambda: train_generator(args.out, steps=args.generator_steps),
        "generator_more": lambda: train_generator(args.out, steps=args.generator_resume_steps, resume=True, peak_lr=5e-4),
        "tiny_decoder": lambda: train_tiny_decoder(args.out),
        "classifier": lambda: guides_module().train_guides(args.out, ("classifier",)),
        "clip": lambda: guides_module().train_guides(args.out, ("clip",)),
        "judge": lambda: guides_module().train_judge(args.out),
        "card": lambda: guides_module().write_card(
            args.out, {"threads": args.threads, "machine": platform.machine(), "torch": torch.__version__, "cpus": os.cpu_count()}
        ),
    }
    for stage in STAGES if args.stage == "all" else (args.stage,):
        log(f"stage {stage}")
        runners[stage]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
