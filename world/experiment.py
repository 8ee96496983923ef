"""Guided sampling on the world model through the same engine the ComfyUI nodes use, and its scores.

A task is a set of prompts and one target the prompts do not already give: a colour, a shape
(through the classifier guide), a text (through the CLIP guide) or a reference image (CLIP
image loss). Every sample is judged by the judges of world/judges.py, never by a guide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..guidance.config import GuidanceConfig
from ..guidance.hf_models import load_guidance_model
from ..guidance.losses.classifier import ClassifierLoss
from ..guidance.losses.clip import CLIPImageLoss, CLIPTextLoss, HFCLIPEncoder
from ..guidance.losses.color import TargetColorLoss
from ..guidance.sampler import sample
from ..guidance.trace import GuidanceTrace
from . import model as wm
from .data import SPLIT_SEEDS, load_split
from .judges import Judges, load_judges
from .render import render
from .scene import COLOR_NAMES, SHAPES, Scene, ShapeSpec, caption, random_scene, rgb01

ATTRIBUTES = ("shape", "color", "background", "place", "size")
DEFAULT_CFG = 4.0


@dataclass
class Task:
    """Prompts plus one target. `hit(reading, i)` says whether sample i reached the target;
    `kept` lists the prompt's attributes the target leaves alone."""

    name: str
    description: str
    scenes: list[Scene]
    target: dict  # e.g. {"background": "yellow"} or {"shape": "star", "color": "yellow"}
    kept: tuple[str, ...]
    target_rgb: tuple[float, float, float] | None = None
    target_shape: str = ""
    reference: torch.Tensor | None = None
    text: str = ""

    @property
    def prompts(self) -> list[str]:
        return [caption(s) for s in self.scenes]


def prompt_scenes(count: int, seed: int, avoid: dict) -> list[Scene]:
    """Seeded single-shape scenes whose attributes avoid the target's values, so the prompt alone never hits it."""
    rng = np.random.default_rng(seed)
    scenes = []
    while len(scenes) < count:
        scene = random_scene(rng, striped=0.0)
        main = scene.main
        values = {"shape": main.shape, "color": main.color, "background": scene.background}
        if any(values[k] in v for k, v in avoid.items()):
            continue
        scenes.append(scene)
    return scenes


def make_tasks(count: int, seed: int = 0) -> list[Task]:
    """The benchmark's four tasks, `count` prompts each. Prompt seeds never meet the training splits'."""
    base = 50_000 + seed
    assert base not in SPLIT_SEEDS.values()
    reference_scene = Scene((ShapeSpec("heart", "purple", "large", "center"),), "orange")
    reference = torch.from_numpy(render(reference_scene)).permute(2, 0, 1)[None]
    color = "yellow"
    return [
        Task(
            "color",
            f"colour loss toward {color} ({'#%02x%02x%02x' % tuple(int(c * 255) for c in rgb01(color))})",
            prompt_scenes(count, base + 1, {"color": {color}, "background": {color}}),
            {"background": color},
            ("shape", "place", "size"),
            target_rgb=rgb01(color),
        ),
        Task(
            "shape",
            "classifier guide toward 'star'",
            prompt_scenes(count, base + 2, {"shape": {"star"}}),
            {"shape": "star"},
            ("color", "background", "place", "size"),
            target_shape="star",
        ),
        Task(
            "text",
            "CLIP text guide toward 'a yellow star'",
            prompt_scenes(count, base + 3, {"shape": {"star"}, "color": {"yellow"}, "background": {"yellow"}}),
            {"shape": "star", "color": "yellow"},
            ("background", "place", "size"),
            target_shape="star",
            text="a yellow star",
        ),
        Task(
            "reference",
            "CLIP image loss toward a render of a large purple heart on orange",
            prompt_scenes(count, base + 4, {"shape": {"heart"}, "color": {"purple"}, "background": {"orange", "purple"}}),
            {"shape": "heart", "color": "purple"},
            ("place", "size"),
            target_shape="heart",
            reference=reference,
        ),
    ]


@dataclass
class World:
    """The model, its guides and judges, loaded once."""

    model: wm.WorldModel
    judges: Judges
    classifier: object
    clip: object
    _real_features: torch.Tensor | None = field(default=None, repr=False)

    def loss_for(self, task: Task):
        if task.name == "color":
            return TargetColorLoss(task.target_rgb, match="pixels")
        if task.name == "shape":
            return ClassifierLoss(self.classifier, task.target_shape)
        if task.name == "text":
            return CLIPTextLoss(HFCLIPEncoder(self.clip), task.text)
        if task.name == "reference":
            return CLIPImageLoss(HFCLIPEncoder(self.clip), task.reference)
        raise ValueError(task.name)

    def real_features(self) -> torch.Tensor:
        if self._real_features is None:
            self._real_features = self.judges.read(load_split("heldout", 1000).images).features
        return self._real_features


def load(folder: str | Path | None = None) -> World:
    folder = Path(folder) if folder is not None else wm.MODEL_DIR
    return World(
        wm.load_world(folder),
        load_judges(folder / "judge"),
        load_guidance_model(folder / "guides" / "classifier"),
        load_guidance_model(folder / "guides" / "clip"),
    )


def initial_noise(count: int, sigma_max: torch.Tensor, seed: int) -> torch.Tensor:
    """Sample i starts from seed + i, so a result never depends on how samples are batched."""
    shape = (1, wm.LATENT_CHANNELS, wm.LATENT_SIZE, wm.LATENT_SIZE)
    return torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(count)]) * sigma_max


@dataclass
class Generated:
    images: torch.Tensor  # (N, 3, 32, 32) in [0, 1], clamped as displayed
    seconds: float
    trace: GuidanceTrace


def generate(
    world: World, task: Task, config: GuidanceConfig, steps: int, seed: int = 0, cfg: float = DEFAULT_CFG, decoder: str = "vae"
) -> Generated:
    """One image per prompt of the task. With config.scale == 0 this is the unguided DDIM sampler."""
    model = world.model
    sigmas = wm.sigmas_for_steps(steps, model.alphas)
    denoiser = model.denoiser(task.prompts, cfg=cfg, cfg_gradient=config.cfg_gradient)
    decode = model.decode if decoder == "vae" else model.decode_tiny
    x = initial_noise(len(task.scenes), sigmas[0], seed)
    trace = GuidanceTrace()
    start = time.perf_counter()
    latents = sample(denoiser, decode, world.loss_for(task), x, sigmas, config, seed=seed, trace=trace)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        images = model.decode(latents).clamp(0, 1)
    return Generated(images, seconds, trace)


@dataclass
class Scores:
    hit_rate: float  # the judges read the target
    guide_hit_rate: float | None  # the task's guide reads the target (None: no model guide)
    keeping: float  # share of the prompt's untouched attributes the judges read as prompted
    prompt_accuracy: dict  # per attribute: the judges read it as prompted
    features: torch.Tensor  # judge features, for realism over a whole method
    seconds_per_sample: float


def _guide_reads(world: World, task: Task, images: torch.Tensor) -> list[bool] | None:
    with torch.no_grad():
        if task.name == "shape":
            loss = world.loss_for(task)
            logits = loss.model.placed(images.device)(pixel_values=loss.preprocess(images)).logits
            return [SHAPES[int(k)] == task.target_shape for k in logits[:, : len(SHAPES)].argmax(1)]
        if task.name in ("text", "reference"):
            encoder = HFCLIPEncoder(world.clip)
            image = torch.nn.functional.normalize(encoder.embed(images), dim=-1)
            shapes = torch.nn.functional.normalize(encoder.embed_text([f"a {s}" for s in SHAPES], images.device), dim=-1)
            colors = torch.nn.functional.normalize(
                encoder.embed_text([f"a {c} {task.target_shape}" for c in COLOR_NAMES], images.device), dim=-1
            )
            shape = (image @ shapes.T).argmax(1)
            color = (image @ colors.T).argmax(1)
            return [SHAPES[int(s)] == task.target["shape"] and COLOR_NAMES[int(c)] == task.target["color"] for s, c in zip(shape, color)]
    return None


def score(world: World, task: Task, generated: Generated) -> Scores:
    reading = world.judges.read(generated.images)
    hits = [all(reading.attribute(k)[i] == v for k, v in task.target.items()) for i in range(len(task.scenes))]
    truth = {k: [getattr(s.main, k) if k != "background" else s.background for s in task.scenes] for k in ATTRIBUTES}
    accuracy = {k: float(np.mean([a == b for a, b in zip(reading.attribute(k), truth[k])])) for k in ATTRIBUTES}
    guide = _guide_reads(world, task, generated.images)
    return Scores(
        hit_rate=float(np.mean(hits)),
        guide_hit_rate=None if guide is None else float(np.mean(guide)),
        keeping=float(np.mean([accuracy[k] for k in task.kept])),
        prompt_accuracy=accuracy,
        features=reading.features,
        seconds_per_sample=generated.seconds / len(task.scenes),
    )
