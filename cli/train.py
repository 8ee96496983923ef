"""`steer train`: AttnDreamBooth from the command line, writing the same files as the ComfyUI node.

    steer train --images photos/ --category dog --name my_dog --model MODEL [--preset fast] \\
                [--out-embeddings DIR --out-loras DIR]

MODEL is either
- a diffusers model folder (unet/, text_encoder/, tokenizer/, vae/, scheduler/): trained with the
  diffusers backend, no ComfyUI needed; or
- a single-file checkpoint (.safetensors/.sft; pickle formats such as .ckpt are refused): loaded
  with ComfyUI's own loaders and trained with the ComfyUI backend, exactly as the node does. This
  needs a ComfyUI checkout in COMFYUI_PATH; its folder goes at the END of sys.path for this
  process only, so ComfyUI's top-level modules (`nodes`, `utils`, `app`, `server`...) never
  shadow an installed package; Steer's own modules are all inside the `steer` package.

Ctrl-C stops after the current step and keeps a checkpoint: the same command resumes.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from ..errors import SteerError
from ..safe_files import SAFETENSORS_SUFFIXES, is_pickle, is_safetensors
from .comfy_bootstrap import import_comfyui
from .progress import TerminalProgress

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def add_train_command(subparsers) -> argparse.ArgumentParser:
    """Adds `train` to the `steer` command's subparsers (cli.py wires it in)."""
    from ..personalize.data import DEFAULT_VIEWS
    from ..personalize.export import DEFAULT_LORA_RANK, UNET_FORMATS
    from ..personalize.stages import CUSTOM, CUSTOM_FIELDS, PRESETS
    from ..personalize.trainer import PRECISIONS

    parser = subparsers.add_parser(
        "train",
        help="train an AttnDreamBooth concept from a folder of photos (writes the embedding, LoRA and JSON ComfyUI loads)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", required=True, help="folder with 3-20 photos of the subject (png, jpg, webp)")
    parser.add_argument("--category", required=True, help="the subject's category, a plain word such as dog, doll or backpack")
    parser.add_argument(
        "--name", required=True, help="concept name: file name and prompt word (embedding:<name>); letters, digits, _ and -"
    )
    parser.add_argument(
        "--model", required=True, help="a diffusers model folder, or a single-file SD1.x/SD2.x checkpoint (needs COMFYUI_PATH)"
    )
    parser.add_argument(
        "--preset",
        choices=[*PRESETS, CUSTOM],
        default="official",
        help="official (the paper), fast (stage 3: 200 steps), or custom with --set",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=(
            f"a custom-plan number (implies --preset custom), e.g. --set unet_steps=300 --set resolution=768. Names: "
            f"{', '.join(CUSTOM_FIELDS)}"
        ),
    )
    parser.add_argument("--unet-format", choices=UNET_FORMATS, default="lora", help="lora (small file) or full (exact .diff weights)")
    parser.add_argument("--rank", type=int, default=DEFAULT_LORA_RANK, help=f"LoRA rank (default {DEFAULT_LORA_RANK})")
    parser.add_argument("--out-embeddings", help="where the token file goes (default: $COMFYUI_PATH/models/embeddings, else ./embeddings)")
    parser.add_argument("--out-loras", help="where the UNet file and JSON go (default: $COMFYUI_PATH/models/loras, else ./loras)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing concept of the same name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--augmented-views",
        type=int,
        default=DEFAULT_VIEWS,
        help=f"augmented views per photo, VAE-encoded once (default {DEFAULT_VIEWS}; 0 = fresh augmentation every sample)",
    )
    parser.add_argument("--gradient-accumulation", type=int, default=1, help="micro-batches per batch (less memory, same result)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--no-gradient-checkpointing", action="store_true", help="faster, but needs much more memory")
    parser.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=10.0,
        help="save a checkpoint this often inside a stage, so a crash loses at most that much training (default 10; 0: only at "
        "stage ends and on Ctrl-C)",
    )
    parser.add_argument(
        "--preview-prompt",
        default="",
        help="the prompt of the preview image made at the end of each stage, with [V] where the subject goes (default: the "
        "training prompt); the previews go beside the LoRA as NAME.preview-STAGE.png, the last also as NAME.preview.png",
    )
    parser.add_argument("--no-previews", action="store_true", help="make no preview images")
    parser.add_argument(
        "--device", help="diffusers backend: cuda, cpu... (default: cuda when available). ComfyUI backend: 'cpu' forces the CPU"
    )
    parser.add_argument("--checkpoints", help="folder for resume checkpoints (default: $XDG_CACHE_HOME/steer/attndreambooth)")
    parser.set_defaults(run=run_train)
    return parser


# --------------------------------------------------------------------------------------------


def load_photos(folder: str) -> list:
    """(3, H, W) float tensors in [0, 1] of every image in `folder`, EXIF orientation applied."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    path = Path(folder)
    if not path.is_dir():
        raise SteerError(f"--images {folder!r} is not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    photos = []
    for file in files:
        try:
            with Image.open(file) as image:
                image = ImageOps.exif_transpose(image).convert("RGB")
                photos.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous())
        except OSError as error:
            raise SteerError(f"cannot read the image {file}: {error}") from None
    return photos


def parse_numbers(pairs: list[str]) -> dict:
    numbers = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator:
            raise SteerError(f"--set takes NAME=VALUE, got {pair!r}")
        name = name.strip().replace("-", "_")
        try:
            number = float(value)
        except ValueError:
            raise SteerError(f"--set {name}: {value!r} is not a number") from None
        numbers[name] = (
            int(number)
            if number.is_integer() and not name.endswith(("learning_rate", "weight_decay", "regularizer_mean", "regularizer_variance"))
            else number
        )
    return numbers


def plan_of(args):
    """The TrainingPlan the arguments ask for; any --set makes it a custom plan."""
    from ..personalize.stages import CUSTOM, build_plan

    numbers = parse_numbers(args.set)
    return build_plan(CUSTOM if numbers else args.preset, args.gradient_accumulation, numbers)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "steer" / "attndreambooth"


def _default_out(kind: str) -> Path:
    comfy_root = os.environ.get("COMFYUI_PATH")
    if comfy_root and (Path(comfy_root) / "models").is_dir():
        return Path(comfy_root) / "models" / kind
    return Path(kind)


# --------------------------------------------------------------------------------------------
# Backends


NEEDS_COMFYUI_FOR_CHECKPOINTS = (
    "single-file checkpoints are loaded with ComfyUI: set COMFYUI_PATH to a ComfyUI checkout, or give a diffusers model folder"
)


@contextmanager
def open_backbone(model_path: str, device: str | None, photos_for, trained_groups):
    """Yields (backbone, description, photos) for a diffusers folder or a single-file checkpoint;
    `photos_for(backbone)` prepares the TrainingImages (their size depends on the model)."""
    path = Path(model_path)
    if path.is_dir():
        import torch

        from ..personalize.diffusers_backbone import DiffusersBackbone

        chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
        backbone = DiffusersBackbone.from_pretrained(str(path), device=chosen)
        photos = photos_for(backbone)
        backbone.cache_latents(photos.all_views())
        yield backbone, f"diffusers folder {path} on {chosen}", photos
        return
    if not path.is_file():
        raise SteerError(f"--model {model_path!r} does not exist; give a diffusers model folder or a checkpoint file")
    if is_pickle(path):
        raise SteerError(
            f"--model {model_path!r} is a pickle file ({path.suffix}); Steer loads safetensors only, because unpickling can run "
            "arbitrary code. Use the model's .safetensors release, or convert the file to safetensors with a tool you trust"
        )
    if not is_safetensors(path):
        raise SteerError(f"--model {model_path!r} is neither a diffusers folder nor a checkpoint file ({', '.join(SAFETENSORS_SUFFIXES)})")
    comfy_sd = import_comfyui(force_cpu=device == "cpu", missing=NEEDS_COMFYUI_FOR_CHECKPOINTS)
    import torch

    with torch.inference_mode():  # as ComfyUI's loader nodes run
        model, clip, vae, _ = comfy_sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True, embedding_directory=None)[
            :4
        ]
    if model is None or clip is None or vae is None:
        raise SteerError(f"{path.name} lacks a UNet, text encoder or VAE; AttnDreamBooth needs a full SD1.x, SD2.x or SDXL checkpoint")
    from ..nodes.comfy_personalize import ComfyBackbone  # only importable with ComfyUI on sys.path

    with torch.inference_mode(False), torch.enable_grad():
        backbone = ComfyBackbone(model, clip, vae, trained_groups=trained_groups)
        photos = photos_for(backbone)
        backbone.cache_latents(photos.all_views())
        with backbone:
            yield backbone, f"{path.name} through ComfyUI ({backbone.architecture}) on {backbone.device}", photos


# --------------------------------------------------------------------------------------------


def run_train(args) -> None:
    from ..personalize.data import TrainingImages
    from ..personalize.export import validate_concept_name
    from ..personalize.stages import plan_for_model
    from ..personalize.trainer import RuntimeOptions, validate_category
    from ..personalize.training_run import check_target_free, save_concept, train_concept

    name = validate_concept_name(args.name)
    category = validate_category(args.category)
    plan = plan_of(args)
    options = RuntimeOptions(
        precision=args.precision, gradient_checkpointing=not args.no_gradient_checkpointing, checkpoint_minutes=args.checkpoint_minutes
    )
    embeddings = Path(args.out_embeddings) if args.out_embeddings else _default_out("embeddings")
    loras = Path(args.out_loras) if args.out_loras else _default_out("loras")
    check_target_free(name, [embeddings], [loras], args.overwrite)
    photo_list = load_photos(args.images)
    progress = TerminalProgress()
    stream = progress.stream

    def photos_for(backbone) -> TrainingImages:
        nonlocal plan
        plan = plan_for_model(plan, sdxl=backbone.is_sdxl)  # the presets train SDXL at 1024 px
        return TrainingImages(photo_list, plan.resolution, views_per_image=args.augmented_views, view_seed=args.seed)

    with open_backbone(args.model, args.device, photos_for, plan.trained_groups) as (backbone, description, photos):
        stream.write(
            f"AttnDreamBooth '{name}' ({category}): {len(photos)} photos, preset {plan.name}, {plan.total_steps} steps, {description}\n"
        )
        try:
            with progress.ctrl_c_stops_cleanly():
                trained = train_concept(
                    backbone,
                    photos,
                    category,
                    plan,
                    args.seed,
                    name=name,
                    checkpoint_root=args.checkpoints or _cache_dir(),
                    options=options,
                    progress=progress,
                    metadata={"trained_in": "steer train (" + description + ")"},
                    preview_prompt=None if args.no_previews else args.preview_prompt,
                )
        except KeyboardInterrupt:
            stream.write("\nstopped; a checkpoint was saved if a step had finished. Run the same command again to resume.\n")
            raise SystemExit(130) from None
    device = getattr(backbone, "device", None)
    paths = save_concept(
        trained, name, embeddings, loras, unet_format=args.unet_format, rank=args.rank, overwrite=args.overwrite, device=device
    )
    previews = write_previews(trained.previews, name, paths.unet.parent)
    resumed = f", resumed at step {trained.resumed_from}" if trained.resumed_from is not None else ""
    if trained.result.steps_lost:
        resumed += f", {trained.result.steps_lost} steps trained again after a stop without a checkpoint"
    stream.write(
        f"saved {paths.embedding}\n      {paths.unet}\n      {paths.metadata}\n"
        + "".join(f"      {path}\n" for path in previews)
        + f"({trained.result.seconds:.0f} s of training{resumed}). In ComfyUI: LoraLoaderModelOnly with {paths.unet.name}, "
        f"and write 'embedding:{name} {category}' in the prompt.\n"
    )


def write_previews(previews: dict, name: str, folder: Path) -> list[Path]:
    """Each stage's preview as NAME.preview-STAGE.png, and the last as NAME.preview.png (the thumbnail
    LoRA managers show), written together once the concept is saved."""
    from ..personalize.plot import png_bytes
    from ..safe_files import StagedFiles

    written = []
    with StagedFiles() as files:
        for index, (stage, image) in enumerate(previews.items()):
            png = png_bytes(image.movedim(0, -1))
            names = [f"{name}.preview-{stage}.png"] + ([f"{name}.preview.png"] if index == len(previews) - 1 else [])
            for file_name in names:
                files.bytes(folder / file_name, png)
                written.append(folder / file_name)
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m steer.cli.train ...` (the same as `steer train ...`)."""
    parser = argparse.ArgumentParser(prog="steer")
    add_train_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        args.run(args)
    except SteerError as error:
        print(f"steer: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
