"""AttnDreamBooth's files in ComfyUI's folders: saved concepts in models/loras, training
checkpoints in the user directory, the UNet file applied as LoRA loaders apply it, previews."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import comfy.sd
import comfy.utils
import folder_paths
import torch

from ..errors import SteerError
from ..personalize.export import METADATA_FORMAT
from ..personalize.plot import png_bytes

CHECKPOINT_ROOT = ("steer", "attndreambooth_checkpoints")  # under ComfyUI's user directory
NO_CONCEPTS = "(no concepts in models/loras)"


def first_folder(kind: str) -> Path:
    folders = folder_paths.get_folder_paths(kind)
    if not folders:
        raise SteerError(f"ComfyUI has no '{kind}' model folder configured")
    return Path(folders[0])


def concept_metadata_files() -> dict[str, Path]:
    """Saved concepts by name: the Steer JSON files in the loras folders."""
    concepts = {}
    for folder in folder_paths.get_folder_paths("loras"):
        if not os.path.isdir(folder):
            continue
        for entry in sorted(os.listdir(folder)):
            if not entry.endswith(".json"):
                continue
            path = Path(folder) / entry
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("format") == METADATA_FORMAT:
                concepts.setdefault(entry[: -len(".json")], path)
    return concepts


def checkpoint_root() -> Path:
    """Training checkpoints live in ComfyUI's user directory (not temp, which ComfyUI empties when it
    starts), so a Cancel, a crash or a restart all resume; each is removed once its concept is saved.
    Outside the per-user folders, so the /userdata API does not serve them."""
    return Path(folder_paths.get_user_directory()).joinpath(*CHECKPOINT_ROOT)


def apply_unet_file(model, path: Path, strength: float):
    """The MODEL with a Steer UNet file applied, exactly as LoraLoaderModelOnly applies it."""
    state = comfy.utils.load_torch_file(str(path), safe_load=True)
    return comfy.sd.load_lora_for_models(model, None, state, strength, 0)[0]


def preview_images(images: list[torch.Tensor], name: str) -> dict:
    """Save (H, W, 3) images in [0, 1] as temp PNGs so the node shows them (like PreviewImage)."""
    folder = Path(folder_paths.get_temp_directory())
    folder.mkdir(parents=True, exist_ok=True)
    shown = []
    for image in images:
        filename = f"steer_attndreambooth_{name}_{uuid.uuid4().hex[:8]}.png"
        (folder / filename).write_bytes(png_bytes(image))
        shown.append({"filename": filename, "subfolder": "", "type": "temp"})
    return {"images": shown}
