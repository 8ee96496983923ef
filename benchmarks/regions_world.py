"""`steer bench regions`: region masks, a reward head and guided img2img on the world model (issue 16).

Every sample runs through the engine the ComfyUI nodes use (guidance.sampler.sample) with the
world's UNet (CFG 4, gradient through the prompt's branch) and its VAE decoder, deterministic
DDIM (the presets' eta 0) as experiment.generate. Every number is read from pixels by judges that
share nothing with the guides (world/judges.py, world/edit_judges.py). Prompts are single-shape
scenes from experiment.prompt_scenes (never "striped"); prompt seeds 80000+ and noise seeds
90000+ never meet the training splits' (1000-4000). Presets `mpgd` (the default) and `paper`.

The rules below were fixed before the first full run and are not tuned after it.

mask: TargetColorLoss (pixels) toward yellow, which no prompt names (shape or background);
  region = the left half of the image. Configurations per preset: unmasked; loss mask only
  (MaskedLoss(loss, Region(mask))); sampler region only (sample(..., region=Region(mask))); both.
  The sampler region keeps the unguided run outside it (the default); the two "outside free"
  configurations only stop the push there (added after the first run, which had only that).
  inside hit = share of the left half's pixels whose nearest palette colour is yellow;
  outside distance = mean absolute RGB difference on the right half to the unguided image of
  the same prompt and seed. RULE (per preset and masked configuration; the headline is "both"):
  the mask works when the inside hit is at least 0.8x the unmasked inside hit AND the outside
  distance is at most 0.25x the unmasked outside distance.

reward: RewardLoss(HFCLIPEncoder(guide CLIP), the "prefers striped" head, world/train_reward.py)
  at strength 1 and 2. Prompts avoid black shapes (the stripe judge cannot read black stripes,
  world/edit_judges.py). Stripe rate = share of samples the stripe judge reads as striped; the
  head's own reading (score > 0) is reported beside it. Cost: prompt-keeping (shape, colour,
  background, size read as prompted; place is not learned, MODEL_CARD.md) and realism
  (Fréchet distance of judge features to the 1000 held-out real renders; noisy at this N).
  A reference row samples the same prompts with "striped" in them, unguided.
  RULES (per preset and strength): it steers when the stripe rate is at least the unguided rate
  + 0.25; it is cheap when keeping drops by at most 0.05 and Fréchet is at most 1.5x unguided.

img2img: sources are renders of held-out scenes (split "heldout") whose shape and background are
  neither orange nor purple; each is encoded with the world VAE, noised to the first sigma of
  ComfyUI's schedule for denoise 0.6 (int(steps / 0.6) steps, the last `steps` of them), x = z +
  sigma * noise, and sampled with the source's caption. Guidance: ReferenceColorLoss toward a
  render of a large purple heart on orange. Attribute: the RGB distance of the judged background
  colour (border-ring median) to the reference's background (orange). Layout: share of samples
  whose judged shape, place and size all equal the source's, and the foreground-mask IoU with
  the source. RULE (per preset): guided img2img moves the attribute when its background distance
  is at most 0.5x unguided img2img's, and keeps the layout when both layout numbers are at least
  unguided img2img's - 0.05.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..digits.model import frechet_distance
from ..guidance.config import PRESETS, GuidanceConfig
from ..guidance.hf_models import load_guidance_model
from ..guidance.losses.clip import HFCLIPEncoder
from ..guidance.losses.color import ReferenceColorLoss, TargetColorLoss
from ..guidance.losses.masked import MaskedLoss
from ..guidance.losses.reward import RewardLoss, load_reward_head
from ..guidance.region import Region
from ..guidance.sampler import sample
from ..world import edit_judges as ej
from ..world import experiment
from ..world import model as wm
from ..world.data import SPLIT_SEEDS, load_split, scenes_for
from ..world.judges import background_rgb
from ..world.render import render
from ..world.scene import Scene, ShapeSpec, caption, rgb01, with_main
from ..world.train_reward import HEAD_FILE

PRESET_NAMES = ("mpgd", "paper")
CFG = experiment.DEFAULT_CFG
TARGET_COLOR = "yellow"
MASK_CONFIGURATIONS = ("unmasked", "loss mask", "sampler region", "both", "sampler region, outside free", "both, outside free")
REWARD_STRENGTHS = (1.0, 2.0)
KEPT = ("shape", "color", "background", "size")
DENOISE = 0.6
REFERENCE_SCENE = Scene((ShapeSpec("heart", "purple", "large", "center"),), "orange")
REFERENCE_COLORS = ("orange", "purple")
PROMPT_SEED, NOISE_SEED = 80_000, 90_000
GRID_COLUMNS = 8
assert not {PROMPT_SEED, NOISE_SEED} & set(SPLIT_SEEDS.values())


@dataclass
class Settings:
    count: int = 48
    steps: int = 50
    seed: int = 0
    quick: bool = False

    def prompt_seed(self, measurement: int) -> int:
        return PROMPT_SEED + 10 * self.seed + measurement

    @property
    def noise_seed(self) -> int:
        return NOISE_SEED + 1000 * self.seed


def unguided_config() -> GuidanceConfig:
    return PRESETS["mpgd"].with_strength(0.0)  # scale 0: plain DDIM, whatever the preset


def run_sampler(
    world, prompts, loss, config, sigmas, start, seed, region=None, outside="unguided"
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """(images (N, 3, 32, 32) clamped to [0, 1], seconds, final latents) from latents `start` at sigmas[0]."""
    denoiser = world.model.denoiser(prompts, cfg=CFG, cfg_gradient=config.cfg_gradient)
    began = time.perf_counter()
    latents = sample(denoiser, world.model.decode, loss, start, sigmas, config, seed=seed, region=region, outside=outside)
    seconds = time.perf_counter() - began
    with torch.no_grad():
        return world.model.decode(latents).clamp(0, 1), seconds, latents


def text_to_image(
    world, prompts, loss, config, settings: Settings, region=None, outside="unguided"
) -> tuple[torch.Tensor, float, torch.Tensor]:
    sigmas = wm.sigmas_for_steps(settings.steps, world.model.alphas)
    start = experiment.initial_noise(len(prompts), sigmas[0], settings.noise_seed)
    return run_sampler(world, prompts, loss, config, sigmas, start, settings.noise_seed, region, outside)


def img2img_sigmas(steps: int, alphas: torch.Tensor, denoise: float = DENOISE) -> torch.Tensor:
    """ComfyUI's BasicScheduler with denoise < 1: the schedule of int(steps / denoise) steps, its last `steps` steps."""
    return wm.sigmas_for_steps(int(steps / denoise), alphas)[-(steps + 1) :]


def _mean(values) -> float:
    return float(torch.as_tensor(values, dtype=torch.float32).mean())


def _row(label: str, images: torch.Tensor, seconds: float, **numbers) -> dict:
    return {"label": label, "seconds_per_sample": seconds / len(images), **numbers, "_images": images[:GRID_COLUMNS]}


def measure_mask(world, settings: Settings, log=print) -> list[dict]:
    scenes = experiment.prompt_scenes(settings.count, settings.prompt_seed(1), {"color": {TARGET_COLOR}, "background": {TARGET_COLOR}})
    prompts = [caption(s) for s in scenes]
    left = ej.left_half()
    right = 1 - left
    color_loss = TargetColorLoss(rgb01(TARGET_COLOR), match="pixels")
    unguided, seconds, unguided_latents = text_to_image(world, prompts, color_loss, unguided_config(), settings)
    right_cells = wm.LATENT_SIZE // 2  # the right half's latent columns

    def numbers(images, latents) -> dict:
        return {
            "inside_hit": _mean(ej.palette_share(images, left, TARGET_COLOR)),
            "outside_hit": _mean(ej.palette_share(images, right, TARGET_COLOR)),
            "outside_distance": _mean(ej.mean_abs_distance(images, unguided, right)),
            # Reported beside the pixels: the VAE decoder (mid-block attention) mixes the whole 8x8 latent.
            "outside_latent_distance": _mean((latents - unguided_latents)[..., right_cells:].abs().flatten(1).mean(1)),
        }

    rows = [_row("unguided", unguided, seconds, preset="", configuration="unguided", **numbers(unguided, unguided_latents))]
    for preset in PRESET_NAMES:
        for configuration in MASK_CONFIGURATIONS:
            loss_masked = configuration.startswith(("loss mask", "both"))
            sampler_masked = configuration.startswith(("sampler region", "both"))
            outside = "free" if configuration.endswith("outside free") else "unguided"
            loss = MaskedLoss(color_loss, Region(left, "left half")) if loss_masked else color_loss
            region = Region(left, "left half") if sampler_masked else None
            images, seconds, latents = text_to_image(world, prompts, loss, PRESETS[preset], settings, region=region, outside=outside)
            rows.append(
                _row(f"{preset}, {configuration}", images, seconds, preset=preset, configuration=configuration, **numbers(images, latents))
            )
            log(_mask_line(rows[-1]))
    return rows


def _mask_line(row: dict) -> str:
    return (
        f"  mask    {row['label']:<36} inside {row['inside_hit']:.2f}  outside distance {row['outside_distance']:.3f} "
        f"(latent {row['outside_latent_distance']:.3f})  "
        f"{row['seconds_per_sample']:.2f} s/sample"
    )


def _reward_scores(world, images, scenes, loss: RewardLoss) -> dict:
    task = experiment.Task("reward", "reward head", scenes, {}, KEPT)
    scores = experiment.score(world, task, experiment.Generated(images, 0.0, None))
    with torch.no_grad():
        head_says = (loss.score(images) > 0).float()
    return {
        "stripe_rate": _mean(ej.read_striped(images)),
        "stripe_share": _mean(ej.stripe_shares(images)),
        "head_stripe_rate": _mean(head_says),
        "keeping": scores.keeping,
        "prompt_accuracy": scores.prompt_accuracy,
        "frechet": frechet_distance(scores.features, world.real_features()),
    }


def measure_reward(world, settings: Settings, log=print) -> list[dict]:
    scenes = experiment.prompt_scenes(settings.count, settings.prompt_seed(2), {"color": set(ej.WEAK_STRIPE_COLORS)})
    prompts = [caption(s) for s in scenes]
    encoder = HFCLIPEncoder(load_guidance_model(wm.MODEL_DIR / "guides" / "clip"))
    loss = RewardLoss(encoder, load_reward_head(wm.MODEL_DIR / "guides" / "reward" / HEAD_FILE))
    rows = []
    unguided, seconds, _ = text_to_image(world, prompts, loss, unguided_config(), settings)
    rows.append(_row("unguided", unguided, seconds, preset="", strength=0.0, **_reward_scores(world, unguided, scenes, loss)))
    striped_prompts = [caption(with_main(s, striped=True)) for s in scenes]
    prompted, seconds, _ = text_to_image(world, striped_prompts, loss, unguided_config(), settings)
    rows.append(
        _row('unguided, prompt says "striped"', prompted, seconds, preset="", strength=0.0, **_reward_scores(world, prompted, scenes, loss))
    )
    log(_reward_line(rows[0]) + "\n" + _reward_line(rows[1]))
    for preset in PRESET_NAMES:
        for strength in REWARD_STRENGTHS if not settings.quick else REWARD_STRENGTHS[:1]:
            images, seconds, _ = text_to_image(world, prompts, loss, PRESETS[preset].with_strength(strength), settings)
            rows.append(
                _row(
                    f"{preset}, strength {strength:g}",
                    images,
                    seconds,
                    preset=preset,
                    strength=strength,
                    **_reward_scores(world, images, scenes, loss),
                )
            )
            log(_reward_line(rows[-1]))
    base = rows[0]
    for row in rows:
        row["keeping_change"] = row["keeping"] - base["keeping"]
        row["frechet_ratio"] = row["frechet"] / base["frechet"] if base["frechet"] > 0 else float("nan")
    return rows


def _reward_line(row: dict) -> str:
    return (
        f"  reward  {row['label']:<32} stripes {row['stripe_rate']:.0%} (head {row['head_stripe_rate']:.0%})  keep {row['keeping']:.0%}  "
        f"Fréchet {row['frechet']:.1f}  {row['seconds_per_sample']:.2f} s/sample"
    )


def img2img_sources(count: int) -> list[Scene]:
    """The first `count` held-out scenes whose shape and background avoid the reference's colours."""
    scenes = [s for s in scenes_for("heldout", 1000) if s.main.color not in REFERENCE_COLORS and s.background not in REFERENCE_COLORS]
    return scenes[:count]


def measure_img2img(world, settings: Settings, log=print) -> list[dict]:
    scenes = img2img_sources(settings.count)
    sources = torch.stack([torch.from_numpy(render(s)).permute(2, 0, 1) for s in scenes])
    reference = torch.from_numpy(render(REFERENCE_SCENE)).permute(2, 0, 1)[None]
    target_background = torch.tensor(rgb01(REFERENCE_SCENE.background))
    prompts = [caption(s) for s in scenes]
    sigmas = img2img_sigmas(settings.steps, world.model.alphas)
    with torch.no_grad():
        latents = world.model.encode(sources)
    start = latents + experiment.initial_noise(len(scenes), sigmas[0], settings.noise_seed)
    loss = ReferenceColorLoss(reference)

    def numbers(images) -> dict:
        reading = world.judges.read(images)
        same = [
            reading.shape[i] == s.main.shape and reading.place[i] == s.main.place and reading.size[i] == s.main.size
            for i, s in enumerate(scenes)
        ]
        return {
            "background_distance": _mean((background_rgb(images) - target_background).norm(dim=1)),
            "background_is_reference": _mean([b == REFERENCE_SCENE.background for b in reading.background]),
            "layout_same": _mean(same),
            "foreground_iou": _mean(ej.foreground_iou(images, sources)),
            "distance_to_source": _mean(ej.mean_abs_distance(images, sources)),
        }

    rows = [_row("source render", sources, 0.0, preset="", **numbers(sources))]
    configurations = [("unguided img2img", "", unguided_config())] + [(f"{p} img2img", p, PRESETS[p]) for p in PRESET_NAMES]
    for label, preset, config in configurations:
        images, seconds, _ = run_sampler(world, prompts, loss, config, sigmas, start, settings.noise_seed)
        rows.append(_row(label, images, seconds, preset=preset, **numbers(images)))
        log(
            f"  img2img {label:<20} background distance {rows[-1]['background_distance']:.3f}  layout {rows[-1]['layout_same']:.0%}  "
            f"IoU {rows[-1]['foreground_iou']:.2f}  {rows[-1]['seconds_per_sample']:.2f} s/sample"
        )
    return rows


def run(settings: Settings, log=print) -> dict:
    world = experiment.load()
    measured, seconds = {}, {}
    for name, measure in (("mask", measure_mask), ("reward", measure_reward), ("img2img", measure_img2img)):
        began = time.perf_counter()
        measured[name] = measure(world, settings, log)
        seconds[name] = time.perf_counter() - began
    heldout = load_split("heldout", 1000)
    measured["stripe_judge"] = {
        "threshold": ej.STRIPE_THRESHOLD,
        "heldout": ej.stripe_accuracy(heldout.images, [s.main.striped for s in heldout.scenes]),
        "heldout_count": len(heldout.scenes),
    }
    measured["seconds"] = seconds
    measured["setup"] = {"cfg": CFG, "target_color": TARGET_COLOR, "kept": list(KEPT), "denoise": DENOISE, "presets": list(PRESET_NAMES)}
    return measured


def execute(args) -> int:
    from . import regions_world_report as report

    torch.set_num_threads(1 if args.quick else max(1, min(2, torch.get_num_threads())))  # quick: tiny batches gain nothing from two
    if args.quick and args.out is None:
        from ..errors import SteerError

        raise SteerError("--quick needs --out: its numbers mean nothing and must not replace the committed results")
    settings = Settings(count=args.count, steps=args.steps, seed=args.seed, quick=args.quick)
    if args.quick:
        settings = Settings(count=min(args.count, 2), steps=min(args.steps, 3), seed=args.seed, quick=True)
    print(
        f"steer bench regions: {settings.count} prompts per measurement, {settings.steps} DDIM steps, CFG {CFG}, "
        f"torch threads {torch.get_num_threads()}{' (QUICK: numbers mean nothing)' if settings.quick else ''}"
    )
    began = time.perf_counter()
    measured = run(settings)
    total = time.perf_counter() - began
    report.write(args.out or report.DEFAULT_OUT, settings, measured, total, log=print)
    return 0
