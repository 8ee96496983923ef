"""digits/MODEL_CARD.md, written from the facts the training run collected."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import torch

from . import model as digits


def write_card(path: Path, facts: dict, grid_path: Path, seed: int):
    f = facts
    grid_link = os.path.relpath(grid_path, path.parent).replace(os.sep, "/")
    u, r, real = f["unguided"], f["real_reference"], f["real_heldout"]
    ddpm, guide, judge, times = f["ddpm"], f["guide"], f["judge"], f["time"]
    tweedie_rows = "\n".join(f"| {t} | {v['sigma']:.2f} | {v['guide']:.2f} | {v['judge']:.2f} |" for t, v in f["tweedie_accuracy"].items())
    guided_rows = "\n".join(
        f"| {g['scale']:g} | {g['hit_rate']:.2f} | {g['argmax_hit_rate']:.2f} | {g['judge_mean_max_prob']:.2f} |" for g in f["guided"]
    )
    card = f"""# Digits: the embedded default model

A tiny pixel-space DDPM and two digit classifiers, trained from scratch on CPU on
scikit-learn's `load_digits()` (1797 handwritten digits, 8x8, 17 grey levels; bundled with
scikit-learn, no download), so loss-guided sampling can be tried and benchmarked in seconds.
Load with `steer.digits.model.load_pretrained()`. This file is written by the training script:

    {f["command"]}

![64 unguided samples, 50 DDIM steps]({grid_link})

*64 unguided samples: deterministic DDIM (eta = 0), 50 steps, seed 0.*

## Data

- Pixels / 16, so images lie in [0, 1] with ink = 1; bilinearly upsampled 8x8 -> 16x16.
  The DDPM works in [-1, 1] (`encode` / `decode`).
- Fixed split from a seeded permutation (`numpy.random.default_rng({digits.SPLIT_SEED}).permutation(1797)`):

| split | size | used for |
|---|---|---|
| `A` (= `guide_train`) | 899 | trains the guide; tests the judge |
| `B` | 898 | tests the guide |
| `judge_train` (first {digits.JUDGE_TRAIN_SIZE} of B) | {digits.JUDGE_TRAIN_SIZE} | trains the judge |
| `heldout` (rest of B) | {898 - digits.JUDGE_TRAIN_SIZE} | seen by no model: the real reference set for realism metrics |
| `ddpm_train` (A + judge_train) | {899 + digits.JUDGE_TRAIN_SIZE} | trains the DDPM |

## Models

| model | architecture | parameters | training |
|---|---|---|---|
| DDPM | diffusers `UNet2DModel`, 16x16x1, channels (32, 64, 64), one ResNet block per level, no attention, GroupNorm(8) | {f["params"]["ddpm"]:,} | {ddpm["steps"]} steps of batch {ddpm["batch_size"]} on ddpm_train, AdamW lr {ddpm["lr"]:g} (warm-up, cosine to 10%), grad-norm clip 1, EMA {ddpm["ema_decay"]} (saved) |
| guide | CNN: conv32-avgpool-conv64-avgpool-conv64-fc128-fc10, 3x3 convs, SiLU | {f["params"]["guide"]:,} | {guide["steps"]} steps of batch {guide["batch_size"]} on A, blur / contrast / noise augmentation on 80% of inputs |
| judge | MLP: 256-256-64-10, ReLU, dropout 0.2 | {f["params"]["judge"]:,} | {judge["steps"]} steps of batch {judge["batch_size"]} on judge_train, clean digits, plus outlier exposure |

- Noise schedule: diffusers `DDPMScheduler`, 1000 steps, linear betas 1e-4 .. 0.02, epsilon
  prediction. In ComfyUI's sigma convention sigma runs from {f["sigma_min"]:.4f} to {f["sigma_max"]:.1f}.
- DDPM loss: eps-MSE weighted per timestep by sigma^2 clamped to [{ddpm["weight_range"][0]:g}, {ddpm["weight_range"][1]:g}]
  (normalised to mean 1), i.e. the x0-MSE over the middle of the schedule. With plain eps-MSE
  and this little training, eps at sigma > 25 was off by ~0.03, which sigma multiplies into
  saturated noise in x0 = x - sigma * eps: about one unguided sample in ten came out as noise.
  Final running loss {ddpm["final_loss"]:.4f} (weighted), {ddpm["final_eps_mse"]:.4f} (plain eps-MSE).
- Guide augmentation (`train.degrade`): random Gaussian blur (sigma 0-2.5 px), a pull towards the
  mean digit (contrast 0.25-1) and pixel noise (std 0-0.25), so it still reads the blurry x0
  predictions of mid-schedule steps. SiLU and average pooling keep its input gradients smooth.
  Final running loss {guide["final_loss"]:.4f} (on augmented inputs).
- Judge outlier exposure (`train.make_junk`): each batch also holds as many non-digits (uniform
  noise, smooth random blobs, constant grey, heavily blurred faint digits, blends of two
  different digits) trained towards the uniform distribution, weight {judge["junk_weight"]:g}. Without it the
  MLP called the mean image a digit with p = 0.99 and the saturated blobs that over-strong
  guidance produces a digit with p > 0.9, so "judge probability > 0.5" meant nothing.
  Final running loss {judge["final_loss"]:.4f} (digit cross-entropy + {judge["junk_weight"]:g} x uniform cross-entropy, whose floor is {judge["junk_weight"]:g} x ln 10 = {judge["junk_weight"] * math.log(10):.3f}).
- The guide and judge differ in architecture and training data, so the judge is an independent
  check on what guidance with the guide achieves. `judge_features` (the judge's 64 penultimate
  ReLU units) is the feature space for the Frechet-distance realism metric.

## Accuracies

| classifier | held-out set | accuracy |
|---|---|---|
| guide | B (898, clean) | {guide["accuracy_B"]:.4f} |
| guide | B, augmented like its training | {guide["accuracy_B_degraded"]:.4f} |
| judge | A (899) | {judge["accuracy_A"]:.4f} |
| judge | heldout (298) | {judge["accuracy_heldout"]:.4f} |

Accuracy on the denoiser's x0 prediction of 300 noised digits from B (where in the schedule
the class is still readable, i.e. where guidance has something to work with):

| timestep | sigma | guide | judge |
|---|---|---|---|
{tweedie_rows}

## Unguided samples, as the judge sees them

{u["count"]} unguided samples (DDIM, {u["steps"]} steps, seed 0, the grid's 64 among them; clamped to [0, 1]) next to real digits:

| | unguided samples | real heldout ({real["count"]}) | real A ({r["count"]}) |
|---|---|---|---|
| judge mean max-probability | {u["judge_mean_max_prob"]:.3f} | {real["judge_mean_max_prob"]:.3f} | {r["judge_mean_max_prob"]:.3f} |
| judged with probability > 0.5 ("looks like a digit") | {u["judge_confident_rate"]:.3f} | {real["judge_confident_rate"]:.3f} | {r["judge_confident_rate"]:.3f} |
| guide and judge agree | {u["guide_judge_agreement"]:.3f} | {real["guide_judge_agreement"]:.3f} | {r["guide_judge_agreement"]:.3f} |
| Frechet distance to heldout (judge features) | {u["frechet_to_heldout"]:.2f} | 0 | {r["frechet_to_heldout"]:.2f} |

The judge's classes for the unguided samples (0-9): {u["judge_class_histogram"]}, so an
unguided sample hits a chosen class about one time in ten. Real A digits show the Frechet
distance a perfect generator would reach with this many samples.

## Guidance sanity check

The simplest x0-gradient guidance with the guide (`train.guided_hit_rate`: each DDIM step's x0 becomes
x0 - scale * sigma^2 * grad_x CE(guide(decode(x0)), target); DDIM with {f["guided"][0]["steps"]} steps,
{f["guided"][0]["count"]} samples, targets 0-9, seed 2).
A hit is the judge's top class being the target with probability > 0.5.

| scale | hit rate | judge top class = target | judge mean max-probability |
|---|---|---|---|
{guided_rows}

Too strong a scale produces saturated blobs that the guide scores highly and the judge rejects.

## Training run

- Seed {seed}; torch.set_num_threads({f["threads"]}); torch {torch.__version__}; {platform.machine()}, {os.cpu_count()} CPUs.
- Wall time: guide {times["guide"]:.0f} s, judge {times["judge"]:.0f} s, DDPM {times["ddpm"]:.0f} s, evaluation {times["evaluation"]:.0f} s;
  total {times["total"]:.0f} s (process CPU time {times["cpu_total"]:.0f} s).
- Files: {", ".join(f"`{name}` {size / 1e6:.2f} MB" for name, size in f["file_sizes"].items())}.
"""
    path.write_text(card)
