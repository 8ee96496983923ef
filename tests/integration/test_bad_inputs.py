"""A campaign of hostile prompts through /prompt, across every Steer node.

Each prompt must end cleanly: rejected by ComfyUI's validation (HTTP 400) or stopped by a
SteerError that says what to change. After each, the server still answers, and no file has
appeared outside the model folders.
"""

import json
import math
import os
from dataclasses import dataclass
from typing import Callable

import pytest
import requests
import torch
from comfy_server import CHECKPOINT_NAME, ExecutionFailed, PromptBuilder, PromptRejected
from fixture_models import stage_concept, stage_reward_head, stage_tiny_clip
from graphs import advanced_sampler_settings, one_step_training_inputs, sampling_graph
from unit.tiny_models import write_tiny_classifier

REJECT, STEER_ERROR = "rejected by validation", "a SteerError"


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[object], dict]  # the ComfyClient -> an API prompt
    expect: str


def _sampled(loss_factory=None, steps=1, **sampler):
    """A guided sampling graph; `loss_factory(b)` makes the loss (a red colour loss by default)."""

    def build(comfy):
        def steer(b, ckpt):
            loss = loss_factory(b) if loss_factory else b.node("SteerColorLoss", color="#ff0000", match="pixels")
            extra = {key: value(b) if callable(value) else value for key, value in sampler.items()}  # callables make links
            inputs = {"vae": ckpt.out(2), "loss": loss.out(0), "preset": "mpgd", "strength": 1.0, **extra}
            return b.node("SteerGuidedSampler", node_id="steer", **inputs)

        return sampling_graph(steer, steps=steps, prefix="bad")[0].prompt()

    return build


def _advanced(steps=1, **changes):
    settings = advanced_sampler_settings(**changes)

    def build(comfy):
        def steer(b, ckpt):
            loss = b.node("SteerColorLoss", color="#ff0000", match="pixels")
            return b.node("SteerGuidedSamplerAdvanced", node_id="steer", vae=ckpt.out(2), loss=loss.out(0), **settings)

        return sampling_graph(steer, steps=steps, prefix="bad")[0].prompt()

    return build


def _loss(class_type, **inputs):
    """A loss node with `inputs`; values that are callables get the builder (for links)."""

    def factory(b):
        resolved = {key: value(b) if callable(value) else value for key, value in inputs.items()}
        return b.node(class_type, **resolved)

    return factory


def _image(b, width=32, height=32):
    return b.node("EmptyImage", width=width, height=height, batch_size=1, color=0x808080).out(0)


def _mask(b, value, batch=1):
    """A 64x64 MASK of one value from stock nodes; batch > 1 through an image batch."""
    if batch == 1:
        return b.node("SolidMask", value=value, width=64, height=64).out(0)
    level = int(round(value * 255))
    image = b.node("EmptyImage", width=64, height=64, batch_size=batch, color=(level << 16) | (level << 8) | level)
    return b.node("ImageToMask", image=image.out(0), channel="red").out(0)


def _reward(head, activation="none", clip=True):
    extra = {"guidance_model": _guidance_model("tiny-clip")} if clip else {}
    return _loss("SteerRewardLoss", head=head, activation=activation, fit="stretch", **extra)


def _guidance_model(folder, precision="auto"):
    return lambda b: b.node("SteerLoadGuidanceModel", model_folder=folder, precision=precision).out(0)


def _train(**changes):
    def build(comfy):
        b = PromptBuilder()
        ckpt = b.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT_NAME)
        photos = b.node("EmptyImage", width=64, height=64, batch_size=4, color=0x336699)
        links = {"model": ckpt.out(0), "clip": ckpt.out(1), "vae": ckpt.out(2), "images": photos.out(0)}
        train = b.node("SteerAttnDreamBoothTrain", **links, **one_step_training_inputs(**{"concept_name": "bad_concept", **changes}))
        b.node("PreviewImage", images=train.out(3))
        return b.prompt()

    return build


def _load_concept(concept, strength=1.0):
    def build(comfy):
        b = PromptBuilder()
        ckpt = b.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT_NAME)
        loaded = b.node("SteerAttnDreamBoothLoad", model=ckpt.out(0), clip=ckpt.out(1), concept=concept, strength=strength)
        text = b.node("CLIPTextEncode", clip=loaded.out(1), text="a photo")
        latent = b.node("EmptyLatentImage", width=64, height=64, batch_size=1)
        sampled = b.node(
            "KSampler",
            model=loaded.out(0),
            positive=text.out(0),
            negative=text.out(0),
            latent_image=latent.out(0),
            seed=1,
            steps=1,
            cfg=1.0,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
        )
        b.node("PreviewImage", images=b.node("VAEDecode", samples=sampled.out(0), vae=ckpt.out(2)).out(0))
        return b.prompt()

    return build


def _report_without_sampling(comfy):
    """A report of a sampler's trace (the sampler itself is not sampled with)."""
    b = PromptBuilder()
    ckpt = b.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT_NAME)
    loss = b.node("SteerColorLoss", color="#ff0000", match="pixels")
    sampler = b.node("SteerGuidedSampler", vae=ckpt.out(2), loss=loss.out(0), preset="mpgd", strength=1.0)
    latent = b.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    report = b.node("SteerGuidanceReport", samples=latent.out(0), trace=sampler.out(1))
    b.node("PreviewImage", images=report.out(0))
    return b.prompt()


def _edit(build, change):
    """A prompt from `build`, then changed by `change(prompt)` (for broken links and unknown nodes)."""

    def edited(comfy):
        prompt = build(comfy)
        change(prompt)
        return prompt

    return edited


def _node_of(prompt, class_type):
    return next(node for node in prompt.values() if node["class_type"] == class_type)


CASES = [
    # --- colour and edge losses ---
    Case("colour that is not a colour", _sampled(_loss("SteerColorLoss", color="reddish", match="pixels")), STEER_ERROR),
    Case("empty colour", _sampled(_loss("SteerColorLoss", color="", match="pixels")), STEER_ERROR),
    Case("five hex digits", _sampled(_loss("SteerColorLoss", color="#12345", match="pixels")), STEER_ERROR),
    Case("hex with non-hex digits", _sampled(_loss("SteerColorLoss", color="#GGGGGG", match="pixels")), STEER_ERROR),
    Case("unknown colour match", _sampled(_loss("SteerColorLoss", color="#ff0000", match="median")), REJECT),
    Case("edge loss without a reference", _sampled(_loss("SteerEdgeLoss")), REJECT),
    # --- the sampler ---
    Case("negative strength", _sampled(strength=-1.0), REJECT),
    Case("strength above the maximum", _sampled(strength=1e9), REJECT),
    Case("strength NaN", _sampled(strength=math.nan), STEER_ERROR),
    Case("unknown preset", _sampled(preset="magic"), REJECT),
    Case("taesd decoder with no TAESD files", _sampled(loss_decoder="taesd"), STEER_ERROR),
    Case(
        "a MODEL wired into the loss input",
        _edit(
            _sampled(),
            lambda p: _node_of(p, "SteerGuidedSampler")["inputs"].update(
                loss=[next(k for k, v in p.items() if v["class_type"] == "CheckpointLoaderSimple"), 0]
            ),
        ),
        REJECT,
    ),
    Case("sampler without a VAE", _edit(_sampled(), lambda p: _node_of(p, "SteerGuidedSampler")["inputs"].pop("vae")), REJECT),
    Case(
        "loss link to an output that does not exist",
        _edit(_sampled(), lambda p: _node_of(p, "SteerGuidedSampler")["inputs"]["loss"].__setitem__(1, 7)),
        REJECT,
    ),
    Case(
        "loss link to a node that does not exist",
        _edit(_sampled(), lambda p: _node_of(p, "SteerGuidedSampler")["inputs"].update(loss=["nowhere", 0])),
        REJECT,
    ),
    Case(
        "a Steer node that does not exist",
        _edit(_sampled(), lambda p: _node_of(p, "SteerColorLoss").update(class_type="SteerTeleport")),
        REJECT,
    ),
    # --- the advanced sampler ---
    Case("guidance window backwards", _advanced(guidance_start=0.9, guidance_end=0.1), STEER_ERROR),
    Case("time-travel window backwards", _advanced(time_travel_repeats=2, time_travel_start=0.8, time_travel_end=0.2), STEER_ERROR),
    Case("zero max step", _advanced(max_step=0.0), REJECT),
    Case("a thousand augmented copies", _advanced(augment_copies=1000), REJECT),
    Case("unknown step rule", _advanced(step_rule="adam"), REJECT),
    Case("scale NaN", _advanced(scale=math.nan), STEER_ERROR),
    Case("scale infinite", _advanced(scale=math.inf), REJECT),
    Case("eta above one", _advanced(eta=2.0), REJECT),
    Case("unknown gradient path", _advanced(gradient_path="telepathy"), REJECT),
    # --- combining losses ---
    Case("combine with no losses", _sampled(_loss("SteerCombineLosses")), STEER_ERROR),
    Case(
        "combine window backwards",
        _sampled(
            _loss(
                "SteerCombineLosses",
                loss_1=lambda b: b.node("SteerColorLoss", color="#00ff00", match="pixels").out(0),
                weight_1=1.0,
                start_1=0.9,
                end_1=0.1,
            )
        ),
        STEER_ERROR,
    ),
    Case(
        "combine weight beyond range",
        _sampled(
            _loss(
                "SteerCombineLosses",
                loss_1=lambda b: b.node("SteerColorLoss", color="#00ff00", match="pixels").out(0),
                weight_1=1e6,
                start_1=0.0,
                end_1=1.0,
            )
        ),
        REJECT,
    ),
    # --- model-based losses ---
    Case(
        "guidance model folder outside models/steer",
        _sampled(
            _loss("SteerClassifierLoss", guidance_model=_guidance_model("../../etc"), label="cat", objective="cross_entropy", fit="stretch")
        ),
        REJECT,
    ),
    Case(
        "unknown guidance precision",
        _sampled(
            _loss(
                "SteerClassifierLoss",
                guidance_model=_guidance_model("tiny-classifier", "float8"),
                label="cat",
                objective="cross_entropy",
                fit="stretch",
            )
        ),
        REJECT,
    ),
    Case(
        "classifier label it does not know",
        _sampled(
            _loss(
                "SteerClassifierLoss",
                guidance_model=_guidance_model("tiny-classifier"),
                label="unicorn",
                objective="cross_entropy",
                fit="stretch",
            )
        ),
        STEER_ERROR,
    ),
    Case(
        "text loss on a classifier folder",
        _sampled(
            _loss(
                "SteerCLIPTextLoss",
                guidance_model=_guidance_model("tiny-classifier"),
                prompt="a cat",
                negative_prompt="",
                negative_weight=0.0,
                distance="spherical",
                fit="stretch",
            )
        ),
        STEER_ERROR,
    ),
    Case(
        "negative weight below zero",
        _sampled(
            _loss(
                "SteerCLIPTextLoss",
                guidance_model=_guidance_model("tiny-clip"),
                prompt="a cat",
                negative_prompt="",
                negative_weight=-1.0,
                distance="spherical",
                fit="stretch",
            )
        ),
        REJECT,
    ),
    Case(
        "image loss with no encoder",
        _sampled(_loss("SteerCLIPImageLoss", reference=_image, distance="spherical", fit="stretch")),
        STEER_ERROR,
    ),
    Case(
        "style block beyond the model",
        _sampled(_loss("SteerStyleLoss", reference=_image, guidance_model=_guidance_model("tiny-clip"), block=47, fit="stretch")),
        STEER_ERROR,
    ),
    Case(
        "style block below zero",
        _sampled(_loss("SteerStyleLoss", reference=_image, guidance_model=_guidance_model("tiny-clip"), block=-1, fit="stretch")),
        REJECT,
    ),
    Case(
        "unknown image fit",
        _sampled(_loss("SteerStyleLoss", reference=_image, guidance_model=_guidance_model("tiny-clip"), block=0, fit="squash")),
        REJECT,
    ),
    # --- region masks ---
    Case("all-zero loss mask", _sampled(_loss("SteerColorLoss", color="#ff0000", match="pixels", mask=lambda b: _mask(b, 0))), STEER_ERROR),
    Case("all-zero sampler mask", _sampled(mask=lambda b: _mask(b, 0.0)), STEER_ERROR),
    Case("three sampler masks for one sample", _sampled(mask=lambda b: _mask(b, 1.0, batch=3)), STEER_ERROR),
    Case("mask wired to an image", _sampled(_loss("SteerColorLoss", color="#ff0000", match="pixels", mask=_image)), REJECT),
    # --- reward heads ---
    Case("reward head for another CLIP width", _sampled(_reward("hostile_wide_head.safetensors")), STEER_ERROR),
    Case("reward head of conv weights", _sampled(_reward("hostile_conv_head.safetensors")), STEER_ERROR),
    Case("reward head of random bytes", _sampled(_reward("hostile_bytes_head.safetensors")), STEER_ERROR),
    Case("reward head that is not listed", _sampled(_reward("../../etc/passwd")), REJECT),
    Case("unknown reward activation", _sampled(_reward("campaign_head.safetensors", activation="tanh")), REJECT),
    Case("reward loss with no CLIP connected", _sampled(_reward("campaign_head.safetensors", clip=False)), STEER_ERROR),
    # --- the report ---
    Case(
        "report samples wired to an image",
        _edit(
            _report_without_sampling,
            lambda p: _node_of(p, "SteerGuidanceReport")["inputs"].update(
                samples=[next(k for k, v in p.items() if v["class_type"] == "SteerColorLoss"), 0]
            ),
        ),
        REJECT,
    ),
    # --- AttnDreamBooth training ---
    Case("concept name with path parts", _train(concept_name="../../evil"), STEER_ERROR),
    Case("empty concept name", _train(concept_name=""), STEER_ERROR),
    Case("empty category", _train(category=""), STEER_ERROR),
    Case("nothing to train", _train(token_steps=0, cross_attention_steps=0, unet_steps=0), STEER_ERROR),
    Case("zero LoRA rank", _train(lora_rank=0), REJECT),
    Case("resolution not a multiple of 8", _train(resolution=65), STEER_ERROR),
    Case("a learning rate of one", _train(token_learning_rate=1.0), STEER_ERROR),
    Case("unknown training preset", _train(preset="overnight"), REJECT),
    # --- AttnDreamBooth loading ---
    Case("concept that is not saved", _load_concept("ghost"), REJECT),
    Case("concept strength beyond range", _load_concept("hostile_paths", strength=10.0), REJECT),
    Case("concept JSON naming a file by a path", _load_concept("hostile_paths"), STEER_ERROR),
    Case("concept JSON that is not JSON (not listed)", _load_concept("hostile_json"), REJECT),
    Case("concept with a corrupt UNet file", _load_concept("hostile_bytes"), STEER_ERROR),
    Case("concept with an empty UNet file", _load_concept("hostile_empty"), STEER_ERROR),
]


def _stage_hostile_concepts(models_dir):
    """Concepts in models/loras that lie: path names, broken JSON, random bytes, an empty file."""
    loras = models_dir / "loras"
    good = stage_concept(models_dir, "campaign_good")
    metadata = json.loads((loras / f"{good}.json").read_text())
    (loras / "hostile_paths.json").write_text(json.dumps({**metadata, "name": "hostile_paths", "unet_file": "../../../../etc/passwd"}))
    (loras / "hostile_json.json").write_text("{ this is not json")
    for name, content in (("hostile_bytes", os.urandom(4096)), ("hostile_empty", b"")):
        (loras / f"{name}.safetensors").write_bytes(content)
        (loras / f"{name}.json").write_text(json.dumps({**metadata, "name": name, "unet_file": f"{name}.safetensors"}))


def _stage_hostile_heads(models_dir):
    """Reward heads in models/steer: one that works, and files that are not heads for the tiny CLIP."""
    from safetensors.torch import save_file

    stage_reward_head(models_dir, "campaign_head.safetensors")
    steer = models_dir / "steer"
    save_file({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)}, str(steer / "hostile_wide_head.safetensors"))
    save_file({"conv.weight": torch.zeros(1, 3, 3, 3)}, str(steer / "hostile_conv_head.safetensors"))
    (steer / "hostile_bytes_head.safetensors").write_bytes(os.urandom(4096))


def _files_outside_models(base_dir) -> set[str]:
    return {
        str(p.relative_to(base_dir))
        for p in base_dir.rglob("*")
        if p.is_file() and p.relative_to(base_dir).parts[0] not in ("models", "user")
    }


@pytest.fixture(scope="module")
def campaign(comfy):
    stage_tiny_clip(comfy.models_dir)
    if not (comfy.models_dir / "steer" / "tiny-classifier" / "config.json").exists():
        write_tiny_classifier(comfy.models_dir / "steer" / "tiny-classifier")
    _stage_hostile_concepts(comfy.models_dir)
    _stage_hostile_heads(comfy.models_dir)
    return comfy


def test_the_campaign_has_at_least_forty_hostile_prompts():
    assert len(CASES) >= 40 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_hostile_prompt_ends_cleanly(campaign, case):
    comfy = campaign
    before = _files_outside_models(comfy.base_dir)
    prompt = case.build(comfy)
    outcome, detail = None, ""
    try:
        comfy.run(prompt, timeout=600)
        outcome = "success"
    except PromptRejected as rejected:
        outcome, detail = REJECT, str(rejected)
    except ExecutionFailed as failed:
        outcome = STEER_ERROR if (failed.exception_type or "").endswith("SteerError") else f"a {failed.exception_type}"
        detail = failed.exception_message
    print(f"[{case.name}] {outcome}: {detail[:160]}")
    assert outcome == case.expect, f"{case.name}: expected {case.expect}, got {outcome}: {detail}"
    if outcome == STEER_ERROR:
        assert len(detail) > 20, f"a SteerError should say what to change, got {detail!r}"
    assert requests.get(f"{comfy.base_url}/object_info/SteerColorLoss", timeout=30).ok, "the server stopped answering"
    assert _files_outside_models(comfy.base_dir) == before, "a file appeared outside the model folders"
