"""What `steer bench personalize` compares and asks: the methods as plans of the one trainer, and
the held-out prompts.

Every method is a TrainingPlan of personalize/stages.py run by personalize/trainer.py, with the
same photos, seeds and augmentation. The published numbers are for Stable Diffusion; one rule,
fixed before any run, carries them to the world model: learning rates of UNet weights are
multiplied by LR_SCALE = 10, the world generator's peak pre-training rate (1e-3) over Stable
Diffusion's (1e-4). The token's learning rate is kept (Adam moves each coordinate by about the
rate, and the world's token embeddings have an RMS of 0.025, the size of CLIP's). Steps,
batch 8 and the regularizer weights are as published. No number here was tuned on the results.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..personalize.stages import CROSS_ATTENTION, OFFICIAL, TOKEN, UNET, RegularizerWeights, TrainingPlan
from ..world.concepts import Concept, photo_backgrounds
from ..world.scene import COLOR_NAMES, IMAGE_SIZE

LR_SCALE = 10.0
PROMPT_TEMPLATE = "a [V] {category}"  # the official "a photo of a [V] {category}" in the world's words
NO_REGULARIZER = RegularizerWeights(0.0, 0.0)


@dataclass(frozen=True)
class Method:
    name: str
    plan: TrainingPlan | None  # None: no training (the base model with the category word alone)
    description: str
    token: str = "category"  # "category": [V] starts as the category word; "rare": a fixed unseen vector, never trained
    lora_rank: int | None = None  # evaluate the UNet delta as this rank's LoRA, as saved for ComfyUI
    trains_as: str | None = None  # the method whose training this one reuses (post-hoc variants)


def _plan(name: str, token=(0, 1e-3, None), cross=(0, 2e-5, None), unet=(0, 2e-6, None)) -> TrainingPlan:
    """A plan from published (steps, learning rate, regularizer) per stage; UNet rates get LR_SCALE."""
    stages = []
    for stage, (steps, rate, weights), scale in zip(OFFICIAL.stages, (token, cross, unet), (1.0, LR_SCALE, LR_SCALE)):
        stages.append(replace(stage, steps=steps, learning_rate=rate * scale, regularizer=weights or NO_REGULARIZER))
    return replace(OFFICIAL, name=name, stages=tuple(stages), resolution=IMAGE_SIZE, prompt_template=PROMPT_TEMPLATE)


def _official(name: str, **changes) -> TrainingPlan:
    token, cross, unet = (OFFICIAL.stage(group) for group in (TOKEN, CROSS_ATTENTION, UNET))
    stages = {
        "token": (token.steps, token.learning_rate, token.regularizer),
        "cross": (cross.steps, cross.learning_rate, cross.regularizer),
        "unet": (unet.steps, unet.learning_rate, unet.regularizer),
    }
    stages.update(changes)
    return _plan(name, stages["token"], stages["cross"], stages["unet"])


# The regularizer compares mean and variance of attention probabilities, which scale as 1/tokens and
# 1/tokens²: the world's 32-token context makes the official weights, set for SD's 77 tokens,
# (77/32)² ≈ 5.8 times stronger on the means and (77/32)⁴ ≈ 34 times on the variances. The
# investigation method puts that back. It was added after the first full run showed the
# regularizer costing identity; it is one formula, not a search.
SD_TOKENS, WORLD_TOKENS = 77, 32
RESCALED_MEAN, RESCALED_VARIANCE = (WORLD_TOKENS / SD_TOKENS) ** 2, (WORLD_TOKENS / SD_TOKENS) ** 4


def _rescaled(weights: RegularizerWeights) -> RegularizerWeights:
    return RegularizerWeights(weights.mean * RESCALED_MEAN, weights.variance * RESCALED_VARIANCE)


ATTNDREAMBOOTH = "attndreambooth"
NO_REGULARIZER_ABLATION = "adb_no_regularizer"
NO_STAGE2_ABLATION = "adb_no_stage2"
TEXTUAL_INVERSION = "textual_inversion"
DREAMBOOTH = "dreambooth"
BASE = "base"

_OFF = NO_REGULARIZER
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(BASE, None, "no training: the category word alone (what the model draws without the subject)"),
        Method(
            TEXTUAL_INVERSION,
            _plan(TEXTUAL_INVERSION, token=(1000, 2e-3, None)),
            "the token only, 1000 steps x 8 images at 2e-3 (diffusers' TI example: 3000 x 4 at an effective 2e-3), no regularizer",
        ),
        Method(
            DREAMBOOTH,
            _plan(DREAMBOOTH, unet=(400, 5e-6, None)),
            "the whole UNet, 400 steps x 8 at 5e-6 x10 (diffusers' train_dreambooth example), a rare token, no prior preservation",
            token="rare",
        ),
        Method(
            "custom_diffusion",
            _plan("custom_diffusion", token=(60, 1e-3, None), cross=(250, 2e-5, None)),
            "Custom-Diffusion-style from the stages: the token (60 steps), then every attn2 weight (250 steps at 2e-5 x10); "
            "Custom Diffusion trains K/V and the token jointly",
        ),
        Method(ATTNDREAMBOOTH, _official(ATTNDREAMBOOTH), "the official plan (60 / 100 / 500 steps), UNet rates x10"),
        Method(
            "attndreambooth_fast",
            _official("attndreambooth_fast", unet=(200, 1e-5, RegularizerWeights(2.0, 5.0))),
            "the official 'fast' plan (stage 3: 200 steps at 1e-5 x10; published at batch 4, here 8)",
        ),
        Method(
            NO_REGULARIZER_ABLATION,
            _official(NO_REGULARIZER_ABLATION, token=(60, 1e-3, _OFF), cross=(100, 2e-5, _OFF), unet=(500, 2e-6, _OFF)),
            "ablation: the official plan without the cross-attention regularizer",
        ),
        Method(
            NO_STAGE2_ABLATION,
            _official(NO_STAGE2_ABLATION, cross=(0, 2e-5, None)),
            "ablation: the official plan without stage 2 (cross-attention)",
        ),
        Method(
            "adb_regularizer_rescaled",
            _official(
                "adb_regularizer_rescaled",
                **{
                    key: (stage.steps, stage.learning_rate, _rescaled(stage.regularizer))
                    for key, stage in zip(("token", "cross", "unet"), OFFICIAL.stages)
                },
            ),
            "investigation: the official plan with the regularizer weights rescaled to the world's 32-token context "
            "(mean x(32/77)², variance x(32/77)⁴)",
        ),
        Method(
            "adb_lora_r4",
            None,
            "ablation: the official plan's UNet delta saved as a rank-4 LoRA (post-hoc, as the node saves it; not LoRA training)",
            lora_rank=4,
            trains_as=ATTNDREAMBOOTH,
        ),
        Method(
            "adb_lora_r32",
            None,
            "the official plan's UNet delta as a rank-32 LoRA, the node's default save",
            lora_rank=32,
            trains_as=ATTNDREAMBOOTH,
        ),
    )
}

# What each prompt asks the concept to obey, four prompts each.
KINDS = ("background", "place", "size", "two", "second")
SINGLE_SUBJECT_KINDS = ("background", "place", "size")
CORNERS = ("top left", "top right", "bottom left", "bottom right")
PAIRS = (("left", "right"), ("top", "bottom"), ("top left", "bottom right"), ("top right", "bottom left"))
SECOND_SHAPES = (("white", "ring"), ("green", "square"), ("pink", "heart"), ("black", "star"), ("orange", "diamond"), ("blue", "circle"))


def _where(place: str) -> str:
    return "in the center" if place == "center" else f"at the {place}"


@dataclass(frozen=True)
class Prompt:
    kind: str
    text: str  # holds [V] once, or twice for "two"
    background: str | None = None  # what the image must show, where the prompt says it
    place: str | None = None
    second_color: str | None = None


def prompts(concept: Concept) -> list[Prompt]:
    """The held-out prompts of a concept: nothing here is in its photos (other backgrounds, corners, small, pairs)."""
    subject = f"[V] {concept.category}"
    unused = [c for c in COLOR_NAMES if c not in concept.colors and c not in photo_backgrounds(concept)]
    out = [Prompt("background", f"a {subject} on a {bg} background", background=bg) for bg in unused[:4]]
    out += [Prompt("place", f"a {subject} {_where(place)}", place=place) for place in CORNERS]
    out += [Prompt("size", f"a small {subject}") for _ in range(4)]
    # Small, so that two things in neighbouring places do not touch and read as one.
    out += [Prompt("two", f"a small {subject} {_where(a)} and a small {subject} {_where(b)}") for a, b in PAIRS]
    seconds = [(color, shape) for color, shape in SECOND_SHAPES if color not in concept.colors and shape != concept.category][:4]
    out += [
        Prompt("second", f"a small {subject} {_where(a)} and a small {color} {shape} {_where(b)}", second_color=color)
        for (a, b), (color, shape) in zip(PAIRS, seconds)
    ]
    return out


def without_subject_token(text: str) -> str:
    """The base model's version of a prompt: the category word alone."""
    return text.replace("[V] ", "")
