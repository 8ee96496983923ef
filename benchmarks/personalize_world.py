"""`steer bench personalize`: AttnDreamBooth's claim, measured on the world model's held-out concepts.

For every held-out concept (world/concepts.py: outlines and colours the model never saw) and
training seed, every method of personalize_world_methods.py trains from the same photos with the
same trainer, then draws the held-out prompts. Each image is read from its pixels
(world/concept_judges.py, world/judges.py): identity of the subject, whether the prompt was
obeyed (background, place, size, two of them, a second shape), and leakage of the subject's
colours into the background and into the other shape. Training time and peak memory are
measured per training. Records are appended to a JSON-lines file as they come, so a long run
can be reported (or resumed) from it; personalize_world_report.py turns them into the table,
the plot and the verdicts.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..personalize.backbone import TextConditioning
from ..personalize.data import AugmentationConfig, TrainingImages
from ..personalize.diffusers_backbone import DiffusersBackbone
from ..personalize.export import lora_factors
from ..personalize.plot import png_bytes
from ..personalize.preview import sample_images
from ..personalize.trainer import RuntimeOptions, train
from ..world.concept_judges import IdentityJudge, blobs, pixel_colors
from ..world.concepts import CONFIRMATION_CONCEPTS, HELDOUT_CONCEPTS, Concept, photos
from ..world.judges import Judges, load_judges
from ..world.model import MODEL_DIR
from ..world.scene import COLOR_NAMES, IMAGE_SIZE, PLACE_CENTERS, PLACES
from .personalize_world_methods import METHODS, SINGLE_SUBJECT_KINDS, Method, Prompt, prompts, without_subject_token

SAMPLING_STEPS = 30
SAMPLING_CFG = 4.0  # the world benchmark's CFG
SAMPLES_PER_PROMPT = 2
# The official augmentation rotates with black corners; black is a world colour, so the corners
# would teach "black background" to every method alike. Flips and crops stay.
AUGMENTATION = AugmentationConfig(rotation_probability=0.0)


class BenchBackbone(DiffusersBackbone):
    """The world model as a training backbone that can start over and take DreamBooth's rare token."""

    rare_token: torch.Tensor | None = None

    def reset_token(self, category: str) -> None:
        if self.rare_token is None:
            super().reset_token(category)
        else:
            with torch.no_grad():
                self.token.copy_(self.rare_token)

    def restore_base(self) -> None:
        self.restore_base_unet()
        self.rare_token = None

    @classmethod
    def load(cls, folder: Path = MODEL_DIR) -> "BenchBackbone":
        return cls.from_pretrained(str(folder), frozen_dtype=torch.float32)


def rare_token(backbone: DiffusersBackbone, seed: int) -> torch.Tensor:
    """A fixed vector no word has, with the size of the vocabulary's rows: DreamBooth's rare identifier."""
    rows = backbone.text_encoder.get_input_embeddings().weight.float()
    vector = torch.randn(rows.shape[1], generator=torch.Generator().manual_seed(10_000 + seed))
    return (vector * rows.pow(2).mean().sqrt()).to(backbone.device)


def as_lora(backbone: BenchBackbone, rank: int) -> None:
    """Replace every UNet weight delta of two or more dimensions by its best rank-`rank` factors (biases stay whole)."""
    with torch.no_grad():
        for name, parameter in backbone.unet.named_parameters():
            base = backbone.base_unet[name].float()
            delta = parameter.detach().float().cpu() - base
            if delta.dim() >= 2 and delta.any():
                up, down = lora_factors(delta, rank)
                parameter.copy_(base + (up.flatten(1) @ down.flatten(1)).reshape(delta.shape))


class PeakMemory:
    """Extra memory a block takes at its peak, from CUDA's allocator; None on the CPU, where resident
    memory barely moves for a model this small (the allocator reuses what earlier trainings freed)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mib = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20


def stage_losses(history: list[dict]) -> dict[str, dict[str, float]]:
    """Per stage, the mean diffusion loss and regularizer over its steps: how strong the regularizer is here."""
    out: dict[str, dict[str, list[float]]] = {}
    for step in history:
        stage = out.setdefault(step["stage"], {"diffusion": [], "regularizer": []})
        stage["diffusion"].append(step["diffusion"])
        stage["regularizer"].append(step["regularizer"])
    return {name: {key: sum(values) / len(values) for key, values in stage.items()} for name, stage in out.items()}


def trainable_mib(backbone: DiffusersBackbone, plan) -> float:
    """Memory of what a plan trains, at its largest stage: float32 weights, gradients and AdamW's two moments."""
    groups = backbone.parameter_groups()
    sizes = [sum(p.numel() for p in groups[stage.parameter_group].values()) for stage in plan.stages if stage.steps]
    return 16 * max(sizes) / 2**20


def _seeds(concept_index: int, seed: int, count: int) -> list[int]:
    return [1_000_000 + 10_000 * seed + 100 * concept_index + k for k in range(count)]


def generate(backbone: BenchBackbone, asked: list[Prompt], concept_index: int, seed: int, trained: bool) -> tuple[torch.Tensor, list]:
    texts, meta = [], []
    for prompt in asked:
        for k in range(SAMPLES_PER_PROMPT):
            texts.append(prompt.text if trained else without_subject_token(prompt.text))
            meta.append(prompt)
    conditions = TextConditioning.cat([backbone.encode_concept_text(text) for text in texts])
    seeds = _seeds(concept_index, seed, len(texts))
    return sample_images(backbone, conditions, seeds, size=IMAGE_SIZE, steps=SAMPLING_STEPS, cfg=SAMPLING_CFG), meta


def score(images: torch.Tensor, asked: list[Prompt], judge: IdentityJudge, judges: Judges) -> dict:
    """Per prompt kind: identity readings (single-subject kinds), obeyed share, leakage."""
    reading = judges.read(images)
    identity = judge.read(images)
    _, found = blobs(images)
    per_kind: dict[str, dict[str, list[float]]] = {}
    for index, prompt in enumerate(asked):
        kind = per_kind.setdefault(prompt.kind, {"obeyed": [], "identity": [], "outline": [], "colour": [], "judge_cosine": []})
        image_blobs = found[index]
        if prompt.kind in SINGLE_SUBJECT_KINDS:
            for key in ("identity", "outline", "colour", "judge_cosine"):
                kind[key].append(identity[key][index])
        if prompt.kind == "background":
            kind["obeyed"].append(float(reading.background[index] == prompt.background))
            border = torch.zeros(images.shape[-2:], dtype=torch.bool)
            border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
            kind.setdefault("background_leak", []).append(judge.concept_share(images[index : index + 1], border[None])[0])
        elif prompt.kind == "place":
            kind["obeyed"].append(float(bool(image_blobs) and _place(image_blobs[0]) == prompt.place))
        elif prompt.kind == "size":
            kind["obeyed"].append(float(bool(image_blobs) and identity["extent"][index] < judge.size_threshold))
        elif prompt.kind == "two":
            kind["obeyed"].append(float(len(image_blobs) == 2))
        elif prompt.kind == "second":
            colours = [_dominant_colour(images[index], blob) for blob in image_blobs]
            kind["obeyed"].append(float(len(image_blobs) == 2 and prompt.second_color in colours))
            if len(image_blobs) == 2:
                shares = judge.concept_share(images[index : index + 1].expand(2, -1, -1, -1), torch.stack(image_blobs))
                kind.setdefault("other_shape_leak", []).append(min(shares))
    return per_kind


def _place(blob: torch.Tensor) -> str:
    ys, xs = torch.nonzero(blob, as_tuple=True)
    h, w = blob.shape
    row = min(range(3), key=lambda r: abs(float(ys.float().mean()) / h - PLACE_CENTERS[r]))
    col = min(range(3), key=lambda c: abs(float(xs.float().mean()) / w - PLACE_CENTERS[c]))
    return PLACES[row * 3 + col]


def _dominant_colour(image: torch.Tensor, blob: torch.Tensor) -> str:
    colors = pixel_colors(image[None])[0][blob]
    return COLOR_NAMES[int(torch.bincount(colors, minlength=len(COLOR_NAMES)).argmax())]


def fingerprint(concept: Concept, seed: int, method: Method, catalogue: dict[str, Method]) -> str:
    """What a record depends on; a record whose fingerprint differs is stale and is made again."""
    trained_by = catalogue[method.trains_as] if method.trains_as else method
    facts = {
        "method": {key: value for key, value in asdict(method).items() if key != "description"},
        "training": trained_by.plan.to_dict() if trained_by.plan else None,
        "concept": asdict(concept),
        "seed": seed,
        "prompts": [asdict(p) for p in prompts(concept)],
        "sampling": [SAMPLING_STEPS, SAMPLING_CFG, SAMPLES_PER_PROMPT, asdict(AUGMENTATION)],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_one(backbone: BenchBackbone, judges: Judges, concept: Concept, concept_index: int, seed: int, method: Method, trained_cache: dict):
    """Train (or reuse) one method on one concept and seed; returns its record."""
    asked = prompts(concept)
    judge = IdentityJudge.build(concept, judges, photos(concept))
    backbone.restore_base()
    seconds = peak = state_mib = losses = None
    if method.trains_as is not None:
        state = trained_cache[(concept.name, seed, method.trains_as)]
        with torch.no_grad():
            for name, parameter in backbone.unet.named_parameters():
                parameter.copy_(state["unet"][name])
            backbone.token.copy_(state["token"])
        as_lora(backbone, method.lora_rank)
    elif method.plan is not None:
        if method.token == "rare":
            backbone.rare_token = rare_token(backbone, seed)
        images = TrainingImages(photos(concept), IMAGE_SIZE, augmentation=AUGMENTATION)
        with PeakMemory(backbone.device) as memory:
            result = train(backbone, images, concept.category, method.plan, seed, options=RuntimeOptions(gradient_checkpointing=False))
        seconds, peak, state_mib = result.seconds, memory.peak_mib, trainable_mib(backbone, method.plan)
        losses = stage_losses(result.history)
        trained_cache[(concept.name, seed, method.name)] = {
            "unet": {name: p.detach().clone() for name, p in backbone.unet.named_parameters()},
            "token": backbone.token.detach().clone(),
        }
    images, meta = generate(backbone, asked, concept_index, seed, trained=method.plan is not None or method.trains_as is not None)
    return {
        "concept": concept.name,
        "seed": seed,
        "method": method.name,
        "train_seconds": seconds,
        "peak_mib": peak,
        "trainable_mib": state_mib,
        "device": backbone.device.type,
        "losses": losses,
        "kinds": score(images, meta, judge, judges),
        "_images": images,
    }


def run(
    concepts: list[str] | None,
    seeds: list[int],
    methods: list[str] | None,
    raw: Path | None = None,
    strips: Path | None = None,
    catalogue: dict[str, Method] = METHODS,
    log=print,
) -> list[dict]:
    """Every record (one per concept, seed and method); records already in `raw` are reused, new ones
    appended. `strips`: a folder for each record's images, one PNG row in prompt order."""
    torch.manual_seed(0)
    everything = HELDOUT_CONCEPTS + CONFIRMATION_CONCEPTS  # the index of a concept here seeds its samples
    chosen = list(HELDOUT_CONCEPTS) if concepts is None else [c for c in everything if c.name in concepts]
    names = list(catalogue) if methods is None else methods
    needed = {catalogue[name].trains_as for name in names if catalogue[name].trains_as} - set(names)
    order = [name for name in catalogue if name in set(names) | needed]
    done = {}
    if raw is not None and raw.is_file():
        for line in raw.read_text().splitlines():
            record = json.loads(line)
            done[(record["concept"], record["seed"], record["method"])] = record
    judges = load_judges(MODEL_DIR / "judge")
    backbone = BenchBackbone.load()
    records, cache, began = [], {}, time.monotonic()
    for seed in seeds:
        for concept_index, concept in enumerate(everything):
            if concept not in chosen:
                continue
            prints = {name: fingerprint(concept, seed, catalogue[name], catalogue) for name in order}
            fresh = {name for name in order if done.get((concept.name, seed, name), {}).get("fingerprint") == prints[name]}
            # A post-hoc variant that must be made again needs its training in this process.
            redo = {name for name in order if name not in fresh}
            redo |= {catalogue[name].trains_as for name in redo if catalogue[name].trains_as}
            for name in order:
                if name not in redo:
                    records.append(done[(concept.name, seed, name)])  # in the raw file already, made the same way
                    continue
                record = run_one(backbone, judges, concept, concept_index, seed, catalogue[name], cache)
                record["fingerprint"] = prints[name]
                images = record.pop("_images")
                if strips is not None:
                    strips.mkdir(parents=True, exist_ok=True)
                    (strips / f"{concept.name}-{seed}-{name}.png").write_bytes(png_bytes(torch.cat(list(images), dim=2).permute(1, 2, 0)))
                log(f"  {concept.name:<9} seed {seed} {name:<20} {_summary(record)}  ({time.monotonic() - began:.0f} s)")
                records.append(record)
                if raw is not None:
                    with raw.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
            cache.clear()
    return [r for r in records if r["method"] in names]


def _summary(record: dict) -> str:
    kinds = record["kinds"]
    identity = [v for k in SINGLE_SUBJECT_KINDS for v in kinds[k]["identity"]]
    obeyed = [sum(kinds[k]["obeyed"]) / len(kinds[k]["obeyed"]) for k in kinds]
    seconds = record["train_seconds"]
    return f"identity {sum(identity) / len(identity):.2f} fidelity {sum(obeyed) / len(obeyed):.2f}" + (
        f" train {seconds:.0f} s" if seconds else ""
    )
