"""AttnDreamBooth nodes: train a personalized concept on a few photos, and load a saved one.

The nodes hold no maths: they read inputs, build a TrainingPlan, hand a ComfyBackbone to
personalize.trainer.train, and report progress. Files are the stock formats:
  models/embeddings/<name>.safetensors   the learned token, used as "embedding:<name>"
  models/loras/<name>.safetensors        the UNet change, for LoraLoaderModelOnly
  models/loras/<name>.json               what was trained, how, and on which base model
"""

from __future__ import annotations

import json
import logging

import comfy.model_management
import comfy.sd
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..errors import SteerError
from ..personalize.data import DEFAULT_VIEWS, TrainingImages
from ..personalize.export import DEFAULT_LORA_RANK, UNET_FORMATS, trigger_phrase, validate_concept_name
from ..personalize.plot import plot_history
from ..personalize.stages import (
    CROSS_ATTENTION,
    CUSTOM,
    OFFICIAL,
    PARAMETER_GROUPS,
    PRESETS,
    SDXL_RESOLUTION,
    TOKEN,
    UNET,
    build_plan,
    plan_for_model,
)
from ..personalize.trainer import PRECISIONS, RuntimeOptions, validate_category
from ..personalize.training_run import check_target_free, save_concept, train_concept
from ..safe_files import file_in_folder, safetensors_header
from .comfy_concepts import NO_CONCEPTS, apply_unet_file, checkpoint_root, concept_metadata_files, first_folder, preview_images
from .comfy_personalize import ComfyBackbone
from .schema import Choice, gradient_checkpointing

log = logging.getLogger("steer")

CATEGORY = "Steer/personalize"

GROUP_LABELS = {TOKEN: "stage 1 (token)", CROSS_ATTENTION: "stage 2 (cross-attention)", UNET: "stage 3 (UNet)"}
_NUMBER_TOOLTIPS = {
    "steps": "optimizer steps (0 skips the stage)",
    "learning_rate": "AdamW learning rate (constant)",
    "batch_size": "images per optimizer step; the regularizer is summed over it",
    "weight_decay": "AdamW weight decay",
    "regularizer_mean": "weight of the attention-map mean term w_mean·(Δmean)²",
    "regularizer_variance": "weight of the attention-map variance term w_var·(Δvar)²",
}


def _custom_inputs() -> dict[str, io.Input]:
    """One optional widget per custom-plan number, by input name, defaulting to the official values."""
    inputs = {}
    for group in PARAMETER_GROUPS:
        stage = OFFICIAL.stage(group)
        values = {
            "steps": stage.steps,
            "learning_rate": stage.learning_rate,
            "batch_size": stage.batch_size,
            "weight_decay": stage.weight_decay,
            "regularizer_mean": stage.regularizer.mean,
            "regularizer_variance": stage.regularizer.variance,
        }
        for number, default in values.items():
            tooltip = f"Only with preset 'custom': {GROUP_LABELS[group]} {_NUMBER_TOOLTIPS[number]}. Official: {default}."
            name = f"{group}_{number}"
            if number == "steps":
                inputs[name] = io.Int.Input(name, default=default, min=0, max=100_000, tooltip=tooltip, optional=True)
            elif number == "batch_size":
                inputs[name] = io.Int.Input(name, default=default, min=1, max=64, tooltip=tooltip, optional=True)
            else:
                inputs[name] = io.Float.Input(
                    name,
                    default=default,
                    min=0.0,
                    max=100.0 if number.startswith("regularizer") else 1.0,
                    step=1e-6 if number == "learning_rate" else 0.01,
                    round=False,
                    tooltip=tooltip,
                    optional=True,
                )
    inputs["resolution"] = io.Int.Input(
        "resolution",
        default=OFFICIAL.resolution,
        min=64,
        max=2048,
        step=64,
        optional=True,
        tooltip=f"Only with preset 'custom': training size in pixels (square crops). Official: 512; SD2.x 768-v models: 768; "
        f"SDXL: {SDXL_RESOLUTION} (the presets use it on SDXL).",
    )
    return inputs


# --------------------------------------------------------------------------------------------
# Nodes


class SteerAttnDreamBoothTrain(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerAttnDreamBoothTrain",
            display_name="Steer AttnDreamBooth Train",
            category=CATEGORY,
            description="AttnDreamBooth (Pang et al., NeurIPS 2024): learn a subject from 3–20 photos in three stages (the new "
            "token's embedding, then the cross-attention layers, then the whole UNet) with a cross-attention regularizer that keeps "
            "the token's attention like its category's. Saves models/embeddings/<name>.safetensors (use it as embedding:<name>), "
            "models/loras/<name>.safetensors (for LoraLoaderModelOnly) and models/loras/<name>.json. SD1.x, SD2.x and SDXL (one "
            "learned vector each for CLIP-L and CLIP-G; the presets train SDXL at 1024 px). "
            "Cancel keeps a checkpoint: queue the same graph again to resume.",
            is_output_node=True,
            inputs=[
                io.Model.Input(
                    "model", tooltip="An SD1.x, SD2.x or SDXL model (from a checkpoint loader). Upstream LoRAs are trained on top of."
                ),
                io.Clip.Input(
                    "clip",
                    tooltip="The CLIP of the same checkpoint. It stays frozen; only the new token's vector is learned (on SDXL one "
                    "vector for CLIP-L and one for CLIP-G, saved in one embedding file).",
                ),
                io.Vae.Input("vae", tooltip="The VAE of the same checkpoint; it encodes the photos (once per augmented view)."),
                io.Image.Input(
                    "images",
                    tooltip="3 to 20 photos of one subject, as one image batch (e.g. Load Image + Image Batch). Vary pose and "
                    "background; crop to the subject.",
                ),
                io.String.Input(
                    "concept_name",
                    default="my_concept",
                    tooltip="File name and prompt word: 1-64 letters, digits, '_' or '-'. The prompt then says embedding:<name>.",
                ),
                io.String.Input(
                    "category",
                    default="dog",
                    tooltip="The subject's category, a plain word such as 'dog', 'doll' or 'backpack'. The token starts from this "
                    "word and its attention is kept like it.",
                ),
                Choice(
                    "preset",
                    [*PRESETS, CUSTOM],
                    default="official",
                    tooltip="official: the paper's numbers (60 + 100 + 500 steps, batch 8, 512 px; SDXL at 1024 px); pick it when "
                    "prompts must be obeyed. fast: stage 3 is 200 steps at lr 1e-5, batch 4 (about 3× quicker): a closer likeness, "
                    "but it obeys the prompt a little less (measured by `steer bench personalize`, see the README). custom: the "
                    "numbers below.",
                ),
                Choice(
                    "unet_format",
                    UNET_FORMATS,
                    default="lora",
                    tooltip="lora: the UNet change as a rank-r LoRA (small file, close to the full change). full: the exact change "
                    "as .diff weights (large file: the whole UNet).",
                ),
                io.Int.Input(
                    "lora_rank",
                    default=DEFAULT_LORA_RANK,
                    min=1,
                    max=1024,
                    tooltip="Rank of the saved LoRA (unet_format lora). Higher keeps more of the trained change, in a bigger file.",
                ),
                io.Boolean.Input(
                    "overwrite",
                    default=False,
                    tooltip="Replace an existing concept of the same name. Off: a taken name is an error before training starts.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate="fixed",
                    tooltip="Seeds every random choice (augmentations, noise, timesteps). Same inputs and seed = same result, and "
                    "what a resumed run continues.",
                ),
                io.Int.Input(
                    "augmented_views",
                    default=DEFAULT_VIEWS,
                    min=0,
                    max=1024,
                    optional=True,
                    tooltip="Augmented views (rotation, flip, crop) made per photo and VAE-encoded once; each sample picks one and "
                    "draws a fresh latent, noise and timestep. 0 = a new augmentation for every sample, as the official code (the "
                    "VAE then runs every step).",
                ),
                io.Int.Input(
                    "gradient_accumulation",
                    default=1,
                    min=1,
                    max=64,
                    optional=True,
                    tooltip="Split each batch into this many micro-batches to save memory; the result is the same. Must divide "
                    "every stage's batch size (official: 1, 2, 4 or 8; fast: 1, 2 or 4).",
                ),
                Choice(
                    "precision",
                    PRECISIONS,
                    default="auto",
                    optional=True,
                    tooltip="Compute precision; trained weights stay float32. auto: bf16 (or fp16) autocast on NVIDIA GPUs, fp32 on "
                    "the CPU.",
                ),
                gradient_checkpointing("Recompute UNet activations in the backward pass: much less memory for about 30% more time."),
                *_custom_inputs().values(),
                # Last, so the widget values of workflows saved before it still line up.
                io.Float.Input(
                    "checkpoint_minutes",
                    default=10.0,
                    min=0.0,
                    max=1440.0,
                    step=0.5,
                    optional=True,
                    tooltip="Save a checkpoint this often inside a stage (every stage end always saves): if ComfyUI crashes or is "
                    "killed, queueing the same prompt again resumes there, losing at most this much training. 0 = stage ends only.",
                ),
                io.String.Input(
                    "preview_prompt",
                    default="",
                    optional=True,
                    tooltip="At the end of each stage the node shows an image of this prompt (fixed seed, 20 DDIM steps) made with "
                    "the weights trained so far, beside the loss plot. Write [V] where the subject goes, e.g. 'a [V] dog on the "
                    "beach'. Empty: the training prompt.",
                ),
            ],
            outputs=[
                io.Model.Output(
                    display_name="model",
                    tooltip="The input model with the trained UNet change applied (the saved file, at strength 1). Use with a stock "
                    "sampler.",
                ),
                io.Clip.Output(
                    display_name="clip",
                    tooltip="The input CLIP. The learned token is read from models/embeddings when a prompt says embedding:<name>.",
                ),
                io.String.Output(
                    display_name="trigger",
                    tooltip="What to write in a prompt to call the concept, e.g. 'embedding:my_dog dog'. Keep the category word "
                    "after the embedding.",
                ),
                io.Image.Output(
                    display_name="loss_plot",
                    tooltip="Diffusion loss and attention regularizer per training step, with the stage boundaries.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        model,
        clip,
        vae,
        images,
        concept_name,
        category,
        preset,
        unet_format,
        lora_rank,
        overwrite,
        seed,
        augmented_views=DEFAULT_VIEWS,
        gradient_accumulation=1,
        precision="auto",
        gradient_checkpointing=True,
        checkpoint_minutes=10.0,
        preview_prompt="",
        **numbers,
    ):
        name = validate_concept_name(str(concept_name).strip())
        category = validate_category(category)
        if unet_format not in UNET_FORMATS:
            raise SteerError(f"unet_format must be one of {UNET_FORMATS}, got {unet_format!r}")
        plan = build_plan(preset, gradient_accumulation, numbers)  # with preset custom: the custom inputs' numbers
        options = RuntimeOptions(precision=precision, gradient_checkpointing=gradient_checkpointing, checkpoint_minutes=checkpoint_minutes)
        embeddings_folder, loras_folder = first_folder("embeddings"), first_folder("loras")
        check_target_free(name, folder_paths.get_folder_paths("embeddings"), folder_paths.get_folder_paths("loras"), overwrite)
        seed = int(seed)

        with torch.inference_mode(False), torch.enable_grad():
            # Checks the architecture and that model, CLIP and VAE match; UNet weights get trainable copies only if trained.
            backbone = ComfyBackbone(model, clip, vae, trained_groups=plan.trained_groups)
            plan = plan_for_model(plan, sdxl=backbone.is_sdxl)  # the presets train SDXL at 1024 px
            photos = TrainingImages.from_batch(images, plan.resolution, views_per_image=int(augmented_views), view_seed=seed)
            pbar = comfy.utils.ProgressBar(max(plan.total_steps, 1))

            def progress(done, total, loss):
                comfy.model_management.throw_exception_if_processing_interrupted()
                pbar.update_absolute(done, total)

            backbone.cache_latents(photos.all_views())
            with backbone:
                trained = train_concept(
                    backbone,
                    photos,
                    category,
                    plan,
                    seed,
                    name=name,
                    checkpoint_root=checkpoint_root(),
                    options=options,
                    progress=progress,
                    base_model=backbone.identity,
                    metadata={"architecture": backbone.architecture, "trained_in": "ComfyUI (Steer AttnDreamBooth Train)"},
                    preview_prompt=preview_prompt,
                )
            paths = save_concept(
                trained,
                name,
                embeddings_folder,
                loras_folder,
                unet_format=unet_format,
                rank=int(lora_rank),
                overwrite=overwrite,
                device=backbone.device,
            )
            result = trained.result

        personalized = apply_unet_file(model, paths.unet, 1.0)
        plot = torch.from_numpy(plot_history(result.history, title=f"{name} ({category}), preset {plan.name}")).unsqueeze(0)
        # The node shows the loss plot, then the preview made at the end of each stage.
        shown = [plot[0], *(preview.movedim(0, -1) for preview in trained.previews.values())]
        return io.NodeOutput(personalized, clip, trigger_phrase(name, category), plot, ui=preview_images(shown, name))


class SteerAttnDreamBoothLoad(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerAttnDreamBoothLoad",
            display_name="Steer AttnDreamBooth Load",
            category=CATEGORY,
            description="Apply a saved AttnDreamBooth concept: its UNet file (from models/loras) on the model, and the trigger phrase "
            "that calls its learned token (from models/embeddings) in a prompt.",
            inputs=[
                io.Model.Input("model", tooltip="The base model the concept was trained on (or a close relative)."),
                io.Clip.Input("clip", tooltip="The CLIP of the same checkpoint; passed through."),
                # Listed again each time ComfyUI asks for the node's inputs, so a newly trained concept shows after a refresh.
                Choice(
                    "concept",
                    sorted(concept_metadata_files()) or [NO_CONCEPTS],
                    tooltip="A concept saved by Steer AttnDreamBooth Train: the <name>.json files in models/loras.",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=-4.0,
                    max=4.0,
                    step=0.05,
                    tooltip="How strongly the UNet change is applied (1 = as trained). The token is unaffected; weight it in the "
                    "prompt, e.g. (embedding:my_dog:1.1).",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with the concept's UNet change applied at the given strength."),
                io.Clip.Output(
                    display_name="clip",
                    tooltip="The CLIP, unchanged: the learned token is read from models/embeddings when a prompt says embedding:<name>.",
                ),
                io.String.Output(
                    display_name="trigger", tooltip="What to write in a prompt to call the concept, e.g. 'embedding:my_dog dog'."
                ),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, concept=None, **kwargs):
        """Re-run when the concept's files change (e.g. retrained with overwrite), not only its name."""
        metadata = concept_metadata_files().get(concept)
        if metadata is None:
            return ""
        unet = metadata.with_name(f"{concept}.safetensors")
        return "|".join(f"{path.stat().st_mtime_ns}" for path in (metadata, unet) if path.exists())

    @classmethod
    def execute(cls, model, clip, concept, strength) -> io.NodeOutput:
        if concept == NO_CONCEPTS:
            raise SteerError("no saved concepts: train one with Steer AttnDreamBooth Train (it writes models/loras/<name>.json)")
        name = validate_concept_name(concept)
        metadata_path = concept_metadata_files().get(name)
        if metadata_path is None:
            raise SteerError(f"no concept named {name!r}: models/loras/{name}.json is missing")
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise SteerError(f"the concept {name!r} cannot be read from {metadata_path} ({error}); train or copy it again") from None
        # File names inside the JSON are plain names in the JSON's own folders, never paths.
        unet_path = file_in_folder(metadata_path.parent, metadata.get("unet_file", f"{name}.safetensors"), str(metadata_path))
        if not unet_path.is_file():
            raise SteerError(f"the concept {name!r} has no UNet file: {unet_path} is missing")
        embedding_file = file_in_folder("models/embeddings", metadata.get("embedding_file", f"{name}.safetensors"), str(metadata_path)).name
        embedding_path = folder_paths.get_full_path("embeddings", embedding_file)
        if embedding_path is None:
            raise SteerError(
                f"the concept {name!r} has no token file: put {embedding_file} into models/embeddings (it travels with {unet_path.name})"
            )
        for path in (unet_path, embedding_path):
            safetensors_header(path)  # a clear error naming a truncated or corrupt file, before ComfyUI opens it
        trigger = metadata.get("trigger") or trigger_phrase(name, metadata.get("category", ""))
        return io.NodeOutput(apply_unet_file(model, unet_path, strength), clip, trigger)


NODES = (SteerAttnDreamBoothTrain, SteerAttnDreamBoothLoad)
