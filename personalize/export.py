"""Write a trained concept as files stock ComfyUI loads (research: comfyui.md §5.2, §5.3):

  embeddings/<name>.safetensors  {"clip_l": (1, 768)} (SD1.x), {"clip_h": (1, 1024)} (SD2.x), or
                                 {"clip_l": (1, 768), "clip_g": (1, 1280)} (SDXL: each tokenizer reads
                                 its own key); prompts use it as "embedding:<name> <category>"
  loras/<name>.safetensors       the UNet change for LoraLoaderModelOnly, keys under "diffusion_model.":
                                   full: <module>.diff (weights) and <module>.diff_b (biases), exact
                                   lora: <module>.lora_up.weight / .lora_down.weight / .alpha for
                                         linear and conv weights (truncated SVD of the delta, rank r),
                                         .diff / .diff_b for norms and biases
  loras/<name>.json              category, trigger, preset, hyper-parameters, base model, time

ComfyUI applies a LoRA as W += (alpha / rank) · (up.flatten(1) @ down.flatten(1)).reshape(W.shape),
so alpha = rank gives scale 1. Every file is written to a temporary file and renamed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import SteerError
from ..safe_files import StagedFiles

UNET_FORMATS = ("full", "lora")
DEFAULT_LORA_RANK = 32
METADATA_FORMAT = "steer.attndreambooth.concept/1"
UNET_PREFIX = "diffusion_model."

# Letters, digits, "_" and "-": the name is a file name and a single prompt word ("embedding:<name>").
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


@dataclass
class Concept:
    """A trained concept, independent of any backend."""

    # The learned vector per text encoder, by its key in the embedding file: {"clip_l": (1, 768)} for
    # SD1.x, {"clip_h": (1, 1024)} for SD2.x, {"clip_l": (1, 768), "clip_g": (1, 1280)} for SDXL.
    token_embeddings: dict[str, torch.Tensor]
    unet_deltas: dict[str, torch.Tensor]  # LDM parameter name (no prefix) -> trained − base
    category: str
    metadata: dict = field(default_factory=dict)  # preset, plan, base model, seconds, seed...


@dataclass(frozen=True)
class ConceptPaths:
    embedding: Path
    unet: Path
    metadata: Path

    def all(self) -> tuple[Path, ...]:
        return (self.embedding, self.unet, self.metadata)


def validate_concept_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.lower() in _WINDOWS_RESERVED:
        raise SteerError(
            f"invalid concept name {name!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit "
            f"(it becomes the file name and the prompt word embedding:<name>), e.g. 'my_dog'"
        )
    return name


def concept_paths(name: str, embeddings_folder: str | Path, loras_folder: str | Path) -> ConceptPaths:
    name = validate_concept_name(name)
    return ConceptPaths(
        embedding=_inside(embeddings_folder, f"{name}.safetensors"),
        unet=_inside(loras_folder, f"{name}.safetensors"),
        metadata=_inside(loras_folder, f"{name}.json"),
    )


def _inside(folder: str | Path, file_name: str) -> Path:
    folder = Path(folder).resolve()
    path = (folder / file_name).resolve()
    if path.parent != folder:  # a second line of defence behind the name check
        raise SteerError(f"the concept file {file_name!r} would land outside {folder}; choose a plain name")
    return path


def trigger_phrase(name: str, category: str) -> str:
    """The words that call the concept in a ComfyUI prompt (the category must follow the token)."""
    return f"embedding:{name} {category}"


# A full SVD of every UNet matrix takes minutes on a CPU (SD1.5: ~250 matrices up to 1280×11520).
# When the rank is small against the matrix, a randomized SVD with power iterations (Halko et
# al.) finds the same leading singular triplets in a fraction of the time.
LOW_RANK_MIN_SIDE = 256
LOW_RANK_OVERSAMPLING = 16
LOW_RANK_POWER_ITERATIONS = 6


def _leading_svd(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    side = min(matrix.shape)
    if side >= LOW_RANK_MIN_SIDE and 4 * rank <= side:
        with torch.random.fork_rng(devices=[matrix.device] if matrix.device.type == "cuda" else []):
            torch.manual_seed(0)  # the same file for the same delta; the caller's RNG is untouched
            left, singular, right = torch.svd_lowrank(matrix, q=min(rank + LOW_RANK_OVERSAMPLING, side), niter=LOW_RANK_POWER_ITERATIONS)
        return left, singular, right.T
    return torch.linalg.svd(matrix, full_matrices=False)


def lora_factors(delta: torch.Tensor, rank: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-`rank` factors (up, down) of a linear or conv weight delta, balanced by √S, in
    the shapes ComfyUI's LoRA loader reshapes: up (out, r[, 1, 1]), down (r, in[, kh, kw]).
    `device` (e.g. the GPU) is where the SVD runs; the factors come back on the CPU."""
    matrix = delta.to(device or delta.device, torch.float32).flatten(1)
    left, singular, right = _leading_svd(matrix, rank)
    left, singular, right = left.cpu(), singular.cpu(), right.cpu()
    rank = min(rank, singular.numel())
    root = singular[:rank].sqrt()
    up = left[:, :rank] * root
    down = root[:, None] * right[:rank]
    if delta.dim() > 2:
        up = up.reshape(delta.shape[0], rank, *([1] * (delta.dim() - 2)))
        down = down.reshape(rank, *delta.shape[1:])
    return up, down


def unet_state_dict(
    deltas: dict[str, torch.Tensor],
    unet_format: str = "lora",
    rank: int = DEFAULT_LORA_RANK,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """ComfyUI LoRA-file keys for the UNet deltas (`device`: where LoRA factorisation runs)."""
    if unet_format not in UNET_FORMATS:
        raise SteerError(f"UNet format must be one of {UNET_FORMATS}, got {unet_format!r}")
    if unet_format == "lora" and not (isinstance(rank, int) and 1 <= rank <= 1024):
        raise SteerError(f"LoRA rank must be a whole number in [1, 1024], got {rank}")
    tensors: dict[str, torch.Tensor] = {}
    for name, delta in sorted(deltas.items()):
        module, _, kind = name.rpartition(".")
        key = UNET_PREFIX + module
        if kind == "bias":
            tensors[f"{key}.diff_b"] = delta.to(dtype)
        elif kind != "weight":
            raise ValueError(f"UNet parameter {name!r} is neither a weight nor a bias")
        elif unet_format == "full" or delta.dim() < 2:
            tensors[f"{key}.diff"] = delta.to(dtype)
        else:
            up, down = lora_factors(delta, rank, device)
            tensors[f"{key}.lora_up.weight"] = up.to(dtype)
            tensors[f"{key}.lora_down.weight"] = down.to(dtype)
            tensors[f"{key}.alpha"] = torch.tensor(float(up.shape[1]))
    return tensors


def write_concept(
    concept: Concept,
    name: str,
    embeddings_folder: str | Path,
    loras_folder: str | Path,
    *,
    unet_format: str = "lora",
    rank: int = DEFAULT_LORA_RANK,
    dtype: torch.dtype = torch.float16,
    overwrite: bool = False,
    device: torch.device | str | None = None,
) -> ConceptPaths:
    paths = concept_paths(name, embeddings_folder, loras_folder)
    existing = [str(path) for path in paths.all() if path.exists()]
    if existing and not overwrite:
        raise SteerError(f"a concept named {name!r} already exists ({', '.join(existing)}); choose another name or turn on overwrite")
    embeddings = {key: vector.detach().float().cpu().contiguous() for key, vector in concept.token_embeddings.items()}
    if not embeddings or any(vector.dim() != 2 or vector.shape[0] != 1 for vector in embeddings.values()):
        shapes = {key: tuple(vector.shape) for key, vector in embeddings.items()}
        raise ValueError(f"token embeddings must be one or more (1, width) vectors, got {shapes}")

    unet = unet_state_dict(concept.unet_deltas, unet_format, rank, dtype, device)
    metadata = {
        "format": METADATA_FORMAT,
        "name": name,
        "category": concept.category,
        "trigger": trigger_phrase(name, concept.category),
        "embedding_file": paths.embedding.name,
        "embedding_keys": sorted(embeddings),
        "unet_file": paths.unet.name,
        "unet_format": unet_format,
        "lora_rank": rank if unet_format == "lora" else None,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **concept.metadata,
    }
    header = {"steer.format": METADATA_FORMAT, "steer.category": concept.category, "steer.concept": name}
    # All three are written in full before any is renamed into place; the JSON (what a loader lists) last.
    with StagedFiles() as files:
        files.safetensors(paths.embedding, embeddings, header)
        files.safetensors(paths.unet, unet, header)
        files.json(paths.metadata, metadata)
    return paths


def concept_from_backbone(backbone, result, *, base_model: str | None = None) -> Concept:
    """Collect what a finished training run produced (a Backbone and its TrainingResult)."""
    return Concept(
        token_embeddings=backbone.token_embeddings(),
        unet_deltas=backbone.unet_weight_deltas(),
        category=result.category,
        metadata={
            "preset": result.plan.name,
            "plan": result.plan.to_dict(),
            "seed": result.seed,
            "base_model": base_model or backbone.identity,
            "training_seconds": round(result.seconds, 1),
            "steps": len(result.history),
            "final_loss": result.history[-1]["loss"] if result.history else None,
        },
    )
