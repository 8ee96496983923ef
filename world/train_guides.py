"""Training stages for what steers and what scores: the guides, the judge, and the model card.

Guides (Hugging Face folders that `SteerLoadGuidanceModel` loads as they are):
    guides/classifier/  ResNetForImageClassification, multi-label: the main shape and its colour
    guides/clip/        CLIPModel (ViT + text transformer), contrastive on images and captions
Judge: judge/shape_judge.safetensors, an MLP on foreground masks (world/judges.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..guidance.preprocess import ImagePreprocess
from . import model as wm
from .data import COUNTS, load_split
from .scene import COLOR_NAMES, PHRASINGS, SHAPES, caption, partial_caption
from .training_loop import batches, count_parameters, degrade, fit, record

CLASSIFIER_LABELS = list(SHAPES) + list(COLOR_NAMES)


def _classifier_targets(scenes) -> torch.Tensor:
    targets = torch.zeros(len(scenes), len(CLASSIFIER_LABELS))
    for i, scene in enumerate(scenes):
        targets[i, SHAPES.index(scene.main.shape)] = 1.0
        targets[i, len(SHAPES) + COLOR_NAMES.index(scene.main.color)] = 1.0
    return targets


def _save_processor_json(folder: Path, processor: dict) -> ImagePreprocess:
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=1))
    return ImagePreprocess.from_hf(processor)


def train_classifier(out: Path, data, heldout, steps: int = 1500, batch: int = 64) -> dict:
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(5)
    folder = out / "guides" / "classifier"
    folder.mkdir(parents=True, exist_ok=True)
    config = ResNetConfig(
        num_channels=3,
        embedding_size=32,
        hidden_sizes=[32, 64, 128],
        depths=[1, 1, 1],
        layer_type="basic",
        hidden_act="silu",
        num_labels=len(CLASSIFIER_LABELS),
        id2label=dict(enumerate(CLASSIFIER_LABELS)),
        label2id={n: i for i, n in enumerate(CLASSIFIER_LABELS)},
        problem_type="multi_label_classification",
    )
    model = ResNetForImageClassification(config)
    preprocess = _save_processor_json(
        folder,
        {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"height": 64, "width": 64},
            "resample": 2,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        },
    )
    targets = _classifier_targets(data.scenes)
    mean = data.images.mean(0, keepdim=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(5)
    order = batches(len(targets), batch, generator)
    start = time.time()
    model.train()

    def batch_loss(step):
        idx = next(order)
        x = degrade(data.images[idx], mean, generator)
        loss = F.binary_cross_entropy_with_logits(model(pixel_values=preprocess(x)).logits, targets[idx])
        return loss, float(loss)

    running = fit("classifier (bce)", optimizer, steps, batch_loss, peak_lr=2e-3, warmup=100)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    with torch.no_grad():
        logits = model(pixel_values=preprocess(heldout.images)).logits
    truth = _classifier_targets(heldout.scenes)
    shape_acc = float((logits[:, : len(SHAPES)].argmax(1) == truth[:, : len(SHAPES)].argmax(1)).float().mean())
    color_acc = float((logits[:, len(SHAPES) :].argmax(1) == truth[:, len(SHAPES) :].argmax(1)).float().mean())
    return {
        "steps": steps,
        "batch": batch,
        "parameters": count_parameters(model),
        "final_bce": running,
        "heldout_shape_accuracy": shape_acc,
        "heldout_color_accuracy": color_acc,
        "seconds": time.time() - start,
    }


def train_clip(out: Path, data, heldout, steps: int = 2500, batch: int = 128) -> dict:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(6)
    folder = out / "guides" / "clip"
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = wm.build_tokenizer(folder)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=wm.MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(image_size=32, patch_size=4, hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4),
        projection_dim=64,
    )
    model = CLIPModel(config)
    preprocess = _save_processor_json(
        folder,
        {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": 32},
            "do_center_crop": True,
            "crop_size": {"height": 32, "width": 32},
            "resample": 3,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "do_convert_rgb": True,
        },
    )
    rng = np.random.default_rng(6)
    mean = data.images.mean(0, keepdim=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(6)
    order = batches(len(data.scenes), batch, generator)
    start = time.time()
    model.train()

    def batch_loss(step):
        idx = next(order).tolist()
        texts = [
            caption(data.scenes[i], int(rng.integers(PHRASINGS))) if rng.random() < 0.5 else partial_caption(data.scenes[i], rng)
            for i in idx
        ]
        ids = tokenizer(texts, padding="max_length", max_length=wm.MAX_TOKENS, truncation=True, return_tensors="pt")
        x = degrade(data.images[idx], mean, generator, clean=0.5)
        loss = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask, pixel_values=preprocess(x), return_loss=True).loss
        return loss, float(loss)

    running = fit("clip (contrastive)", optimizer, steps, batch_loss, peak_lr=1e-3)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    accuracy = _clip_zero_shot(model, tokenizer, preprocess, heldout)
    return {
        "steps": steps,
        "batch": batch,
        "parameters": count_parameters(model),
        "final_contrastive_loss": running,
        **accuracy,
        "seconds": time.time() - start,
    }


@torch.no_grad()
def _clip_zero_shot(model, tokenizer, preprocess, heldout) -> dict:
    """Zero-shot accuracy on held-out renders: shape with prompts 'a <shape>', colour with 'a <colour> shape'-style prompts."""
    # The towers as the guidance loss reads them (guidance/losses/clip.py), not get_*_features,
    # whose return type differs between transformers releases.
    image = F.normalize(model.visual_projection(model.vision_model(pixel_values=preprocess(heldout.images)).pooler_output), dim=-1)

    def accuracy(prompts: list[str], truth: list[int]) -> float:
        ids = tokenizer(prompts, padding="max_length", max_length=wm.MAX_TOKENS, return_tensors="pt")
        pooled = model.text_model(input_ids=ids.input_ids, attention_mask=ids.attention_mask).pooler_output
        text = F.normalize(model.text_projection(pooled), dim=-1)
        return float(((image @ text.T).argmax(1) == torch.tensor(truth)).float().mean())

    return {
        "heldout_zero_shot_shape": accuracy([f"a {s}" for s in SHAPES], [SHAPES.index(s.main.shape) for s in heldout.scenes]),
        "heldout_zero_shot_color": accuracy(
            [f"a {c} star" for c in COLOR_NAMES], [COLOR_NAMES.index(s.main.color) for s in heldout.scenes]
        ),
    }


def train_guides(out: Path, which: tuple[str, ...] = ("classifier", "clip")) -> None:
    data = load_split("guide", COUNTS["guide"])
    heldout = load_split("heldout", COUNTS["heldout"])
    if "classifier" in which:
        record(out, "classifier", train_classifier(out, data, heldout))
    if "clip" in which:
        record(out, "clip", train_clip(out, data, heldout))


def train_judge(out: Path, steps: int = 3000, batch: int = 128) -> None:
    from .judges import Judges, ShapeJudge, extents, mask_inputs, save_judges

    torch.manual_seed(7)
    data = load_split("judge", COUNTS["judge"])
    masks = mask_inputs(data.images)
    labels = torch.tensor([SHAPES.index(s.main.shape) for s in data.scenes])
    judge = ShapeJudge()
    optimizer = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(7)
    order = batches(len(labels), batch, generator)
    start = time.time()
    judge.train()

    def batch_loss(step):
        idx = next(order)
        loss = F.cross_entropy(judge(masks[idx]), labels[idx])
        return loss, float(loss)

    running = fit("shape judge (ce)", optimizer, steps, batch_loss, peak_lr=2e-3, warmup=100, log_every=500)
    judge.eval()
    extent = extents(data.images)
    thresholds = {}
    for k, shape in enumerate(SHAPES):
        small = extent[(labels == k) & torch.tensor([s.main.size == "small" for s in data.scenes])]
        large = extent[(labels == k) & torch.tensor([s.main.size == "large" for s in data.scenes])]
        thresholds[shape] = float((small.mean() + large.mean()) / 2)
    judges = Judges(judge, thresholds)
    facts = {
        "steps": steps,
        "batch": batch,
        "parameters": count_parameters(judge),
        "final_ce": running,
        "seconds": time.time() - start,
        **judge_accuracy(judges),
    }
    save_judges(judges, out / "judge", facts)
    record(out, "judge", facts)


def judge_accuracy(judges) -> dict:
    """How often each judge reads held-out real renders (the generator's own style) right."""
    heldout = load_split("heldout", COUNTS["heldout"])
    reading = judges.read(heldout.images)
    truth = {
        "shape": [s.main.shape for s in heldout.scenes],
        "color": [s.main.color for s in heldout.scenes],
        "background": [s.background for s in heldout.scenes],
        "place": [s.main.place for s in heldout.scenes],
        "size": [s.main.size for s in heldout.scenes],
    }
    return {f"heldout_{k}_accuracy": float(np.mean([a == b for a, b in zip(reading.attribute(k), v)])) for k, v in truth.items()}


def write_card(out: Path, machine: dict) -> None:
    from .card import write_model_card

    write_model_card(out, machine)
