"""Hugging Face model folders for guidance: checked, loaded safely, cached per process.

Safety rules, all enforced before transformers sees the folder:
- safetensors only: a pickle file (.bin, .pt, .ckpt...) can run code when it is loaded;
- local files only: nothing is ever fetched from a hub;
- no remote code (transformers' trust_remote_code stays off).

A folder loads once per process and is reused by every prompt that names it (key: resolved path
plus the files' mtimes and sizes, so replacing a file reloads it). Weights stay on the CPU in
the checkpoint's dtype until a loss first uses them; then they move to that loss's device and
dtype, once.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import SteerError
from ..safe_files import file_in_folder, is_pickle, safetensors_header
from .preprocess import ImagePreprocess

log = logging.getLogger("steer")

CONFIG_FILE = "config.json"
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_FILE_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"))

EXPECTED_FILES_TEXT = (
    "config.json, model.safetensors (or model.safetensors.index.json with its shards) and preprocessor_config.json; "
    "a CLIP folder used for text also needs tokenizer.json (or vocab.json + merges.txt)"
)

KINDS = ("clip", "clip_vision", "classifier")
PRECISIONS = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class FolderContents:
    """What a model folder holds, read from its config.json. Raises SteerError when unusable."""

    path: Path
    kind: str  # clip (text + vision), clip_vision (vision only) or classifier
    config: dict
    preprocessor: dict

    @classmethod
    def check(cls, folder: str | Path) -> "FolderContents":
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise SteerError(f"model folder {str(path)!r} does not exist. Put a Hugging Face model folder there ({EXPECTED_FILES_TEXT}).")
        names = {p.name for p in path.iterdir() if p.is_file()}
        has_safetensors = any(n in names for n in SAFETENSORS_FILES)
        pickles = sorted(n for n in names if is_pickle(n))
        if not has_safetensors and pickles:
            raise SteerError(
                f"model folder {str(path)!r} has only pickle weights ({', '.join(pickles)}). Steer loads safetensors only, "
                "because pickle files can run code when loaded. Download the model's model.safetensors "
                "(most Hugging Face repos have one) into this folder."
            )
        missing = [
            name
            for name, present in (
                (CONFIG_FILE, CONFIG_FILE in names),
                ("model.safetensors (or model.safetensors.index.json)", has_safetensors),
                (PREPROCESSOR_FILE, PREPROCESSOR_FILE in names),
            )
            if not present
        ]
        if missing:
            raise SteerError(
                f"model folder {str(path)!r} is missing {', '.join(missing)}. A guidance model folder holds {EXPECTED_FILES_TEXT}."
            )
        config = _read_json(path / CONFIG_FILE)
        preprocessor = _read_json(path / PREPROCESSOR_FILE)
        kind = _kind_of(config, path)
        if "auto_map" in config or any(isinstance(v, dict) and "auto_map" in v for v in (preprocessor, config.get("vision_config"))):
            # Remote code is a program shipped with the weights: never run, whatever the folder asks.
            log.warning(
                "steer: %s asks for its own Python code (auto_map); Steer never runs it and loads the standard "
                "transformers class for %r instead",
                path,
                kind,
            )
        return cls(path=path, kind=kind, config=config, preprocessor=preprocessor)

    def tokenizer_files(self) -> tuple[str, ...] | None:
        for files in TOKENIZER_FILE_SETS:
            if all((self.path / f).is_file() for f in files):
                return files
        return None


def _read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SteerError(f"cannot read {str(file)!r} as JSON ({error}); re-download it") from None


def _kind_of(config: dict, path: Path) -> str:
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if any(a.endswith("ForImageClassification") for a in architectures):
        return "classifier"
    if model_type == "clip":
        return "clip"
    if model_type == "clip_vision_model":
        return "clip_vision"
    raise SteerError(
        f"model folder {str(path)!r} holds a {model_type!r} model ({', '.join(architectures) or 'no architectures listed'}). "
        "Steer guides with CLIP folders (model_type 'clip' or 'clip_vision_model') and image classifiers "
        "(an architecture ending in 'ForImageClassification')."
    )


class LoadedModel:
    """One loaded folder: a frozen eval-mode module shared by every loss and prompt that uses it."""

    def __init__(self, contents: FolderContents, module: torch.nn.Module):
        self.contents = contents
        self.module = module
        self._placement = (next(module.parameters()).device, next(module.parameters()).dtype)
        self._tokenizer = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.contents.path

    @property
    def kind(self) -> str:
        return self.contents.kind

    def placed(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        """The module on `device` in `dtype`, moved there on first request (later requests are free)."""
        device = torch.device(device)
        with self._lock:
            if self._placement != (device, dtype):
                # Outside inference mode, or a ComfyUI prompt would turn the weights into inference tensors.
                with torch.inference_mode(False), torch.no_grad():
                    self.module.to(device=device, dtype=dtype)
                self._placement = (device, dtype)
        return self.module

    def tokenizer(self):
        if self._tokenizer is None:
            if self.kind != "clip":
                raise SteerError(
                    f"model {self.path.name!r} is a {self.kind} model and has no text encoder; load a full CLIP folder for text guidance"
                )
            if self.contents.tokenizer_files() is None:
                raise SteerError(
                    f"model folder {str(self.path)!r} has no tokenizer: text guidance needs tokenizer.json "
                    "(or vocab.json + merges.txt) and tokenizer_config.json from the model's repository"
                )
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True, trust_remote_code=False)
        return self._tokenizer


@dataclass(frozen=True)
class GuidanceModel:
    """What a user picked: a loaded folder and the precision to run it in."""

    loaded: LoadedModel
    precision: str = "auto"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise SteerError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @property
    def name(self) -> str:
        return self.loaded.path.name

    @property
    def kind(self) -> str:
        return self.loaded.kind

    @property
    def config(self) -> dict:
        return self.loaded.contents.config

    def dtype_for(self, device: torch.device) -> torch.dtype:
        if self.precision == "auto":
            # Half precision halves memory on GPUs; CPUs are slow or unsupported in fp16.
            return torch.float16 if torch.device(device).type == "cuda" else torch.float32
        return getattr(torch, self.precision)

    def placed(self, device: torch.device) -> torch.nn.Module:
        return self.loaded.placed(device, self.dtype_for(device))

    def preprocess(self, fit: str = "stretch") -> ImagePreprocess:
        vision = self.config.get("vision_config", self.config) if self.kind in ("clip", "clip_vision") else self.config
        return ImagePreprocess.from_hf(self.loaded.contents.preprocessor, vision.get("image_size"), fit=fit)

    def tokenizer(self):
        return self.loaded.tokenizer()


_CACHE: dict[Path, tuple[tuple, LoadedModel]] = {}
_CACHE_LOCK = threading.Lock()


def load_guidance_model(folder: str | Path, precision: str = "auto") -> GuidanceModel:
    """Check and load a model folder, or return the one already loaded from it."""
    contents = FolderContents.check(folder)
    resolved = contents.path.resolve()
    signature = folder_signature(resolved)
    with _CACHE_LOCK:
        cached = _CACHE.get(resolved)
        if cached is None or cached[0] != signature:
            _CACHE[resolved] = (signature, LoadedModel(contents, _load_module(contents)))  # a changed folder replaces the stale entry
        return GuidanceModel(_CACHE[resolved][1], precision)


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def folder_signature(path: Path) -> tuple:
    """Names, mtimes and sizes of the folder's files: changes when a file is replaced, added or removed."""
    return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in path.iterdir() if p.is_file()))


def _weight_files(path: Path) -> list[Path]:
    """model.safetensors, or the shards its index names (plain names in the folder)."""
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        return [path / "model.safetensors"]
    shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
    return [file_in_folder(path, shard, str(index)) for shard in shards]


def _load_module(contents: FolderContents) -> torch.nn.Module:
    import transformers

    for weights in _weight_files(contents.path):
        safetensors_header(weights)  # a truncated or corrupt file is named, before transformers reads it

    architectures = contents.config.get("architectures") or []
    if contents.kind == "classifier":
        model_class = transformers.AutoModelForImageClassification
    elif contents.kind == "clip":
        model_class = transformers.CLIPModel
    elif "CLIPVisionModel" in architectures:
        model_class = transformers.CLIPVisionModel
    else:
        model_class = transformers.CLIPVisionModelWithProjection
    log.info("steer: loading guidance model %s (%s)", contents.path, contents.kind)
    # Outside inference mode: weights built inside a ComfyUI prompt would be inference tensors,
    # which autograd refuses to save for backward.
    with torch.inference_mode(False):
        try:
            module, info = model_class.from_pretrained(
                str(contents.path),
                local_files_only=True,
                use_safetensors=True,
                trust_remote_code=False,
                output_loading_info=True,
            )
        except (OSError, ValueError) as error:
            raise SteerError(f"cannot load model folder {str(contents.path)!r}: {error}") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise SteerError(
            f"model folder {str(contents.path)!r}: model.safetensors lacks {len(missing)} weights "
            f"(e.g. {', '.join(missing[:3])}); the file does not match config.json. Re-download both from the same repository."
        )
    module.eval()
    module.requires_grad_(False)
    return module


def list_model_folders(roots: list[str | Path], max_depth: int = 3) -> list[str]:
    """Sub-folders (relative, '/'-separated) of the roots that hold a config.json, sorted.

    Nested folders count too (e.g. 'openai/clip-vit-base-patch32'), so users can group models.
    """
    found = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        stack = [(root, 0)]
        while stack:
            folder, depth = stack.pop()
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for child in children:
                if (child / CONFIG_FILE).is_file():
                    found.add(child.relative_to(root).as_posix())
                elif depth + 1 < max_depth:
                    stack.append((child, depth + 1))
    return sorted(found)


def resolve_model_folder(roots: list[str | Path], name: str) -> Path:
    """The folder called `name` under the first root that has it; never outside a root.

    The check is on the name, not the resolved path, so symlinked model folders still work.
    """
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise SteerError(f"model folder name {name!r} must be a folder inside the steer model folder, not a path out of it")
    for root in roots:
        candidate = Path(root) / relative
        if candidate.is_dir():
            return candidate
    raise SteerError(f"model folder {name!r} not found under {', '.join(str(r) for r in roots) or '(no model folders registered)'}")
