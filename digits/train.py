"""Train the embedded digits models and write their weights, a sample grid and MODEL_CARD.md.

    python -m steer.digits.train --out digits/weights

Seeded and deterministic on a given machine (fixed thread count, seeded generators for data
order, noise and timesteps). About 5-6 minutes on 2 CPU cores, most of it the DDPM.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import model as digits
from .card import write_card

SEED = 0


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


def _batches(num_items: int, batch_size: int, generator: torch.Generator):
    """Endless minibatch indices: a fresh seeded permutation per epoch."""
    while True:
        order = torch.randperm(num_items, generator=generator)
        for start in range(0, num_items - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _gaussian_blur(images: torch.Tensor, blur_sigma: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Per-image Gaussian blur (blur_sigma in pixels, (B,)); sigma ~0 leaves the image unchanged."""
    b, _, h, w = images.shape
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets[None, :] / blur_sigma.clamp(min=1e-3)[:, None]) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, 2r+1)
    x = images.view(1, b, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0)), kernel.view(b, 1, 1, -1), groups=b)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius)), kernel.view(b, 1, -1, 1), groups=b)
    return x.view(b, 1, h, w)


def degrade(images: torch.Tensor, mean_image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The guide's augmentation: look like an x0 prediction from a noisy step.

    Early in sampling the Tweedie estimate is a blurry, low-contrast blend towards the average
    digit; a guide trained only on clean digits gives poor gradients there. Each image gets a
    random blur, a random pull towards the mean image and some pixel noise; a fifth stay clean.
    """
    b = images.shape[0]
    rand = lambda: torch.rand(b, generator=generator)  # noqa: E731
    blur_sigma = rand() * 2.5
    contrast = (0.25 + 0.75 * rand()).view(b, 1, 1, 1)
    noise_std = (rand() * 0.25).view(b, 1, 1, 1)
    degraded = _gaussian_blur(images, blur_sigma)
    degraded = mean_image + contrast * (degraded - mean_image)
    degraded = degraded + noise_std * torch.randn(images.shape, generator=generator)
    keep_clean = (rand() < 0.2).view(b, 1, 1, 1)
    return torch.where(keep_clean, images, degraded)


def make_junk(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-digits for the judge to be unsure about (outlier exposure), one per input digit.

    An MLP trained on digits alone is confidently wrong on anything: it called the mean image
    a digit with p = 0.99 and the saturated blobs of over-strong guidance digits with p > 0.9.
    Returns (junk images in [0, 1], mask of rows to use): kinds are uniform noise, smooth random
    blobs, constant grey, heavily blurred faint digits, and blends of two different digits.
    """
    b, _, h, w = images.shape
    kind = torch.randint(0, 5, (b,), generator=generator).view(b, 1, 1, 1)
    noise = torch.rand(images.shape, generator=generator)
    coarse = torch.randn(b, 1, 4, 4, generator=generator)
    sharpness = 3.0 + 17.0 * torch.rand(b, 1, 1, 1, generator=generator)
    threshold = torch.rand(b, 1, 1, 1, generator=generator) * 1.5 - 0.5
    blobs = torch.sigmoid(sharpness * (F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) - threshold))
    grey = torch.rand(b, 1, 1, 1, generator=generator).expand_as(images)
    faint = 0.4 * _gaussian_blur(images, 3.0 + torch.rand(b, generator=generator) * 2.0)
    partner = torch.randperm(b, generator=generator)
    blend = torch.where(
        torch.rand(b, 1, 1, 1, generator=generator) < 0.5, 0.5 * (images + images[partner]), torch.maximum(images, images[partner])
    )
    junk = torch.stack([noise, blobs, grey, faint, blend])  # (5, B, 1, H, W)
    junk = torch.gather(junk, 0, kind.unsqueeze(0).expand(1, b, 1, h, w))[0]
    usable = (kind.view(b) != 4) | (labels != labels[partner])  # a blend of two 3s is still a 3
    return junk, usable


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    classifier.eval()
    return float((classifier(images).argmax(dim=1) == labels).float().mean())


# ----------------------------------------------------------------------------------------
# Training phases
# ----------------------------------------------------------------------------------------


def train_classifier(classifier, images, labels, *, steps, lr, weight_decay, batch_size, augment, seed, name, junk_weight=0.0):
    """Cross-entropy training. augment: apply `degrade` to the inputs. junk_weight > 0: also push
    the prediction on `make_junk` images towards uniform, with this weight."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    mean_image = images.mean(dim=0, keepdim=True)
    batches = _batches(images.shape[0], batch_size, generator)
    classifier.train()
    running = None
    for step in range(1, steps + 1):
        idx = next(batches)
        inputs = degrade(images[idx], mean_image, generator) if augment else images[idx]
        loss = F.cross_entropy(classifier(inputs), labels[idx])
        if junk_weight > 0:
            junk, usable = make_junk(images[idx], labels[idx], generator)
            uniform_ce = -classifier(junk).log_softmax(dim=1).mean(dim=1)  # cross-entropy to uniform
            loss = loss + junk_weight * (uniform_ce * usable).sum() / usable.sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 200 == 0 or step == steps:
            print(f"[{name}] step {step}/{steps} loss {running:.4f}", flush=True)
    classifier.eval()
    return running


def train_ddpm(unet, images, *, steps, lr, batch_size, ema_decay, seed, weight_range=None):
    """Epsilon-prediction DDPM training; leaves the EMA of the weights in `unet` (what is saved).

    weight_range (lo, hi): if set, each timestep's eps-MSE is weighted by sigma^2 clamped to
    [lo, hi] (normalised to mean 1): the x0-MSE in between. Returns the final running
    (weighted loss, plain eps-MSE)."""
    generator = torch.Generator().manual_seed(seed)
    scheduler = digits.make_scheduler()
    weights = torch.ones(scheduler.config.num_train_timesteps)
    if weight_range:
        weights = (digits.training_sigmas() ** 2).clamp(*weight_range)
        weights = weights / weights.mean()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    lr_at = lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))  # noqa: E731
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    x0_all = digits.encode(images)
    batches = _batches(images.shape[0], batch_size, generator)
    unet.train()
    running = None
    start = time.time()
    for step in range(1, steps + 1):
        x0 = x0_all[next(batches)]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator)
        per_image = (unet(scheduler.add_noise(x0, noise, t), t).sample - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (weights[t] * per_image).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        decay = min(ema_decay, (1 + step) / (10 + step))  # short warm-up so early EMA is not stuck at init
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].lerp_(v, 1.0 - decay)
                else:
                    ema[k].copy_(v)
        now = torch.stack([loss.detach(), per_image.detach().mean()])
        running = now if running is None else 0.98 * running + 0.02 * now
        if step % 100 == 0 or step == steps:
            print(f"[ddpm] step {step}/{steps} loss {running[0]:.4f} eps-mse {running[1]:.4f} ({time.time() - start:.0f}s)", flush=True)
    unet.load_state_dict(ema)
    unet.eval()
    return float(running[0]), float(running[1])


# ----------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------


def save_module(module: nn.Module, path: Path, metadata: dict):
    """Weights plus metadata as one JSON string: safetensors writes several metadata keys in
    arbitrary order, which would make identical retrainings differ byte for byte."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={digits.METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    path.chmod(0o644)  # safetensors creates files readable by the owner only


def save_grid(images: torch.Tensor, path: Path, columns: int = 8, scale: int = 4, gap: int = 2):
    """A PNG grid of (N, 1, H, W) images in [0, 1], ink white on black, nearest-upscaled."""
    from PIL import Image

    images = images.clamp(0, 1)
    n, _, h, w = images.shape
    rows = math.ceil(n / columns)
    cell_h, cell_w = h * scale + gap, w * scale + gap
    canvas = torch.full((rows * cell_h + gap, columns * cell_w + gap), 0.35)
    big = F.interpolate(images, scale_factor=scale, mode="nearest")[:, 0]
    for i in range(n):
        r, c = divmod(i, columns)
        canvas[gap + r * cell_h : gap + r * cell_h + h * scale, gap + c * cell_w : gap + c * cell_w + w * scale] = big[i]
    Image.fromarray((canvas * 255).round().byte().numpy(), mode="L").save(path)


@torch.no_grad()
def evaluate_samples(bundle: digits.PretrainedDigits, samples: torch.Tensor, reference: torch.Tensor) -> dict:
    """Judge confidence, guide/judge agreement and realism of images, clamped to [0, 1] first:
    what is judged is what would be displayed."""
    samples = samples.clamp(0, 1)
    judge_probs = bundle.judge(samples).softmax(dim=1)
    guide_pred = bundle.guide(samples).argmax(dim=1)
    confidence, judge_pred = judge_probs.max(dim=1)
    return {
        "judge_mean_max_prob": float(confidence.mean()),
        "judge_confident_rate": float((confidence > 0.5).float().mean()),
        "guide_judge_agreement": float((guide_pred == judge_pred).float().mean()),
        "judge_class_histogram": torch.bincount(judge_pred, minlength=10).tolist(),
        "frechet_to_heldout": digits.frechet_distance(bundle.judge_features(samples), bundle.judge_features(reference)),
    }


@torch.no_grad()
def tweedie_accuracy(bundle: digits.PretrainedDigits, images, labels, timesteps=(100, 300, 400, 500, 600, 800)) -> dict:
    """Guide and judge accuracy on the denoiser's x0 predictions of noised real digits: at which
    noise levels x0 still carries the class, i.e. where guidance has something to work with."""
    generator = torch.Generator().manual_seed(SEED + 21)
    x0 = digits.encode(images)
    result = {}
    for t in timesteps:
        sigma = float(bundle.denoiser.sigmas[t])
        predicted = digits.decode(bundle.denoiser(x0 + sigma * torch.randn(x0.shape, generator=generator), sigma))
        result[t] = {
            "sigma": sigma,
            "guide": float((bundle.guide(predicted).argmax(dim=1) == labels).float().mean()),
            "judge": float((bundle.judge(predicted).argmax(dim=1) == labels).float().mean()),
        }
    return result


def guided_hit_rate(bundle: digits.PretrainedDigits, scale: float, num_images: int = 50, steps: int = 25, seed: int = 2) -> dict:
    """Sanity check that the guide gives usable gradients: the simplest x0-gradient guidance.

    Each DDIM step replaces the denoiser output x0 by x0 - scale * sigma^2 * grad_x CE(guide(x0), target)
    (classifier guidance added to the score (x0 - x) / sigma^2). Targets cycle through 0-9. A hit is
    the judge's top class being the target with probability > 0.5."""
    targets = torch.arange(num_images) % 10
    sigmas = digits.sigmas_for_steps(steps)
    x = torch.randn(num_images, 1, digits.IMAGE_SIZE, digits.IMAGE_SIZE, generator=torch.Generator().manual_seed(seed)) * sigmas[0]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x_in = x.detach().requires_grad_(True)
        x0 = bundle.denoiser(x_in, sigma)
        if scale > 0:
            loss = F.cross_entropy(bundle.guide(digits.decode(x0)), targets, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_in)
            x0 = x0 - scale * sigma**2 * grad
        x0 = x0.detach()
        x = x0 + sigma_next * (x - x0) / sigma
    with torch.no_grad():
        probs = bundle.judge(digits.decode(x).clamp(0, 1)).softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    return {
        "scale": scale,
        "steps": steps,
        "count": num_images,
        "hit_rate": float(((predicted == targets) & (confidence > 0.5)).float().mean()),
        "argmax_hit_rate": float((predicted == targets).float().mean()),
        "judge_mean_max_prob": float(confidence.mean()),
    }


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(digits.WEIGHTS_DIR), help="directory for the .safetensors files and samples.png")
    parser.add_argument("--card", default=None, help="model card path (default: MODEL_CARD.md next to the out directory)")
    parser.add_argument("--ddpm-steps", type=int, default=1200)
    parser.add_argument("--ddpm-batch", type=int, default=64)
    parser.add_argument("--ddpm-lr", type=float, default=2e-3)
    parser.add_argument("--guide-steps", type=int, default=800)
    parser.add_argument("--judge-steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2, help="torch threads; use 1 on a machine that is busy with other work")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    card_path = Path(args.card) if args.card else out.parent / "MODEL_CARD.md"
    t_total, cpu_total = time.time(), time.process_time()
    command = "python -m steer.digits.train " + " ".join(argv if argv is not None else sys.argv[1:])
    facts = {"threads": args.threads, "time": {}, "command": command.strip()}

    train_a, labels_a = digits.load_digits_images("A")
    images_b, labels_b = digits.load_digits_images("B")
    judge_x, judge_y = digits.load_digits_images("judge_train")
    heldout_x, heldout_y = digits.load_digits_images("heldout")
    ddpm_x, _ = digits.load_digits_images("ddpm_train")

    # Guide: CNN on half A, augmented.
    t0 = time.time()
    torch.manual_seed(SEED + 1)
    guide = digits.GuideCNN()
    guide_cfg = dict(steps=args.guide_steps, lr=3e-3, weight_decay=1e-4, batch_size=128)
    guide_loss = train_classifier(guide, train_a, labels_a, augment=True, seed=SEED + 1, name="guide", **guide_cfg)
    degraded_b = degrade(images_b, train_a.mean(dim=0, keepdim=True), torch.Generator().manual_seed(SEED + 11))
    facts["guide"] = dict(
        guide_cfg,
        final_loss=guide_loss,
        accuracy_B=accuracy(guide, images_b, labels_b),
        accuracy_B_degraded=accuracy(guide, degraded_b, labels_b),
    )
    facts["time"]["guide"] = time.time() - t0
    print(f"[guide] accuracy on B {facts['guide']['accuracy_B']:.4f}, on degraded B {facts['guide']['accuracy_B_degraded']:.4f}")

    # Judge: MLP on judge_train (part of half B), clean digits plus non-digits.
    t0 = time.time()
    torch.manual_seed(SEED + 2)
    judge = digits.JudgeMLP()
    judge_cfg = dict(steps=args.judge_steps, lr=2e-3, weight_decay=1e-3, batch_size=128, junk_weight=0.5)
    judge_loss = train_classifier(judge, judge_x, judge_y, augment=False, seed=SEED + 2, name="judge", **judge_cfg)
    facts["judge"] = dict(
        judge_cfg,
        final_loss=judge_loss,
        accuracy_A=accuracy(judge, train_a, labels_a),
        accuracy_heldout=accuracy(judge, heldout_x, heldout_y),
    )
    facts["time"]["judge"] = time.time() - t0
    print(f"[judge] accuracy on A {facts['judge']['accuracy_A']:.4f}, on heldout {facts['judge']['accuracy_heldout']:.4f}")

    # DDPM on everything but the held-out set.
    t0 = time.time()
    torch.manual_seed(SEED + 3)
    unet = digits.build_unet()
    ddpm_cfg = dict(steps=args.ddpm_steps, lr=args.ddpm_lr, batch_size=args.ddpm_batch, ema_decay=0.995, weight_range=(0.1, 30.0))
    ddpm_loss, ddpm_eps_mse = train_ddpm(unet, ddpm_x, seed=SEED + 3, **ddpm_cfg)
    facts["ddpm"] = dict(ddpm_cfg, final_loss=ddpm_loss, final_eps_mse=ddpm_eps_mse)
    facts["time"]["ddpm"] = time.time() - t0

    facts["params"] = {"ddpm": _count(unet), "guide": _count(guide), "judge": _count(judge)}
    save_module(
        unet,
        out / digits.DDPM_FILE,
        {"model": "ddpm", "unet_config": digits.UNET_CONFIG, "scheduler_config": digits.SCHEDULER_CONFIG, "training": facts["ddpm"]},
    )
    save_module(guide, out / digits.GUIDE_FILE, {"model": "guide", "architecture": "GuideCNN", "training": facts["guide"]})
    save_module(judge, out / digits.JUDGE_FILE, {"model": "judge", "architecture": "JudgeMLP", "training": facts["judge"]})

    # Evaluate what was saved, loaded the way users load it.
    t0 = time.time()
    bundle = digits.load_pretrained(out)
    facts["sigma_min"], facts["sigma_max"] = bundle.denoiser.sigma_min, bundle.denoiser.sigma_max
    grid_path = out / "samples.png"
    # Seeded noise draws nest, so the grid's 64 equal sample_unguided(denoiser, 64, 50, seed=0).
    samples = digits.decode(digits.sample_unguided(bundle.denoiser, 256, steps=50, seed=0))
    save_grid(samples[:64], grid_path)
    facts["unguided"] = dict(evaluate_samples(bundle, samples, heldout_x), count=256, steps=50)
    facts["real_reference"] = dict(evaluate_samples(bundle, train_a[:256], heldout_x), count=256)
    facts["real_heldout"] = dict(evaluate_samples(bundle, heldout_x, heldout_x), count=heldout_x.shape[0])
    facts["tweedie_accuracy"] = tweedie_accuracy(bundle, images_b[:300], labels_b[:300])
    facts["guided"] = [guided_hit_rate(bundle, scale) for scale in (1.0, 10.0)]
    facts["time"]["evaluation"] = time.time() - t0
    facts["time"]["total"] = time.time() - t_total
    facts["time"]["cpu_total"] = time.process_time() - cpu_total
    facts["file_sizes"] = {
        name: (out / name).stat().st_size for name in (digits.DDPM_FILE, digits.GUIDE_FILE, digits.JUDGE_FILE, "samples.png")
    }
    write_card(card_path, facts, grid_path, seed=SEED)

    summary = {k: facts[k] for k in ("params", "unguided", "real_heldout", "guided", "time", "file_sizes")}
    print(json.dumps(summary, indent=1, default=str))
    print(f"wrote {out} and {card_path}")


if __name__ == "__main__":
    main()
