"""One training run from photos to concept files, shared by the ComfyUI node and `steer train`:
the checks that must fail before any training, the resumable checkpoint folder, the trainer,
and writing the files. Nothing here imports ComfyUI.

    check_target_free(name, embeddings_folders, loras_folders, overwrite)   # before loading models
    with backbone ...:
        trained = train_concept(backbone, photos, category, plan, seed, name=..., checkpoint_root=...)
    paths = save_concept(trained, name, embeddings_folder, loras_folder, ...)  # also drops the checkpoints
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import SteerError
from .checkpoint import CheckpointStore
from .data import TrainingImages
from .export import Concept, ConceptPaths, concept_from_backbone, write_concept
from .preview import check_preview_prompt, preview_image
from .stages import TrainingPlan
from .trainer import ProgressCallback, RuntimeOptions, TrainingResult, run_fingerprint, train, validate_category

log = logging.getLogger("steer")

EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")  # what ComfyUI's embedding loader tries


def existing_concept_files(name: str, embeddings_folders: Sequence[str | Path], loras_folders: Sequence[str | Path]) -> list[Path]:
    """Every file a concept called `name` would clash with (ComfyUI looks in every folder)."""
    found = []
    for folder in loras_folders:
        found += [Path(folder) / f"{name}{extension}" for extension in (".safetensors", ".json")]
    for folder in embeddings_folders:
        found += [Path(folder) / f"{name}{extension}" for extension in EMBEDDING_EXTENSIONS]
    return [path for path in found if path.is_file()]


def check_target_free(name: str, embeddings_folders: Sequence[str | Path], loras_folders: Sequence[str | Path], overwrite: bool) -> None:
    """A name that is taken fails now, not after an hour of training. With overwrite, the files
    are replaced in the first folders; a same-named file elsewhere would still shadow or be
    shadowed by them, so that is an error too."""
    existing = existing_concept_files(name, embeddings_folders, loras_folders)
    if not existing:
        return
    if not overwrite:
        raise SteerError(
            f"a concept named {name!r} already exists ({', '.join(map(str, existing))}); choose another name or turn on overwrite"
        )
    targets = {(Path(loras_folders[0]) / f"{name}{extension}").resolve() for extension in (".safetensors", ".json")}
    targets.add((Path(embeddings_folders[0]) / f"{name}.safetensors").resolve())
    elsewhere = [str(path) for path in existing if path.resolve() not in targets]
    if elsewhere:
        raise SteerError(
            f"overwrite would write {name!r} into the first loras/embeddings folders, but files of that name also exist at "
            f"{', '.join(elsewhere)}, and ComfyUI could pick either; remove them or choose another name"
        )


def checkpoint_folder(root: str | Path, name: str, fingerprint: str) -> Path:
    """One folder per run, named after the concept and the run's fingerprint. Older folders of the
    same concept name are removed, so an abandoned run does not keep gigabytes around."""
    root = Path(root)
    folder = root / f"{name}-{fingerprint[:16]}"
    if root.is_dir():
        for stale in root.glob(f"{name}-*"):
            if stale != folder and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
    return folder


def stage_offsets(plan: TrainingPlan) -> dict[str, int]:
    """Steps done before each stage starts, by stage name (for one progress bar over all stages)."""
    offsets, total = {}, 0
    for stage in plan.stages:
        offsets[stage.name] = total
        total += stage.steps
    return offsets


@dataclass
class TrainedConcept:
    concept: Concept
    result: TrainingResult
    store: CheckpointStore
    resumed_from: int | None  # the overall step the run continued from, if it resumed
    previews: dict = field(default_factory=dict)  # stage name -> (3, H, W) preview in [0, 1], when asked for


def train_concept(
    backbone,
    images: TrainingImages,
    category: str,
    plan: TrainingPlan,
    seed: int,
    *,
    name: str,
    checkpoint_root: str | Path,
    options: RuntimeOptions = RuntimeOptions(),
    progress: Callable[[int, int, float], None] | None = None,
    base_model: str | None = None,
    metadata: dict | None = None,
    preview_prompt: str | None = None,
) -> TrainedConcept:
    """Train (resuming from this run's checkpoint if there is one) and collect the concept.
    `progress(done_steps, total_steps, loss)` is called after every step; raising from it stops
    training cleanly with a checkpoint (that is how Cancel and Ctrl-C work). `preview_prompt`: None makes no
    previews; "" previews the training prompt, anything else must hold [V]; a preview is made at the end of
    each stage that trains (personalize/preview.py)."""
    category = validate_category(category)
    fingerprint = run_fingerprint(backbone, images, category, plan, seed)
    store = CheckpointStore(checkpoint_folder(checkpoint_root, name, fingerprint), fingerprint)
    offsets, total = stage_offsets(plan), plan.total_steps
    resumed_from = None
    position = store.position()
    if position is not None:
        stage_index, step = position
        resumed_from = offsets[plan.stages[stage_index].name] + step if stage_index < len(plan.stages) else total
        log.info(f"Steer AttnDreamBooth: resuming '{name}' from its checkpoint at step {resumed_from}/{total} ({store.folder})")
        if progress is not None:
            progress(resumed_from, total, float("nan"))

    def report(stage_name, step, stage_steps, loss):
        progress(offsets[stage_name] + step, total, loss)

    on_step: ProgressCallback | None = report if progress is not None else None
    previews = {}

    def preview(stage_name):
        prompt = preview_prompt or plan.prompt(category)
        previews[stage_name] = preview_image(backbone, prompt, seed=seed, size=plan.resolution)

    if preview_prompt:
        check_preview_prompt(preview_prompt)  # before training, not after the first stage
    result = train(
        backbone,
        images,
        category,
        plan,
        seed,
        store=store,
        progress=on_step,
        options=options,
        on_stage_end=preview if preview_prompt is not None else None,
    )
    concept = concept_from_backbone(backbone, result, base_model=base_model)
    concept.metadata.update({"images": len(images), "augmented_views": images.views_per_image, "precision": options.precision})
    concept.metadata.update(metadata or {})
    return TrainedConcept(concept, result, store, resumed_from, previews)


def save_concept(
    trained: TrainedConcept, name: str, embeddings_folder: str | Path, loras_folder: str | Path, **write_options
) -> ConceptPaths:
    """Write the three files (all or none; `write_options` as export.write_concept takes them:
    unet_format, rank, overwrite, device...), then drop the run's checkpoints."""
    paths = write_concept(trained.concept, name, embeddings_folder, loras_folder, **write_options)
    trained.store.clear()
    shutil.rmtree(trained.store.folder, ignore_errors=True)
    log.info(
        f"Steer AttnDreamBooth: saved '{name}' ({paths.embedding}, {paths.unet}, {paths.metadata}) after "
        f"{trained.result.seconds:.0f} s of training"
    )
    return paths
