"""Random-weight models the integration tests put on a test server: nothing is ever downloaded.

- cached_clip_vision_file(): a ViT-L/14 CLIP vision file in ComfyUI's key layout (the smallest CLIP
  vision config the stock CLIPVisionLoader recognises), built once by clip_vision_probe.py and cached
  under ~/.cache/steer-tests (or STEER_TEST_CACHE).
- stage_tiny_clip(): the tiny Hugging Face CLIP folder of tests/unit/tiny_models.py in models/steer.
- stage_clip_vision(): the cached CLIP vision file, linked into models/clip_vision.
- stage_reward_head(): a random reward head for the tiny CLIP, LAION-aesthetic layout, in models/steer.
- stage_concept(): an AttnDreamBooth concept for the fixture checkpoint, written by the pack's own
  writer (random token and cross-attention changes), as Steer AttnDreamBooth Train saves one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from comfy_server import CHECKPOINT_NAME, run_script

from steer.benchmarks.random_checkpoints import cached_model

PROBE_SCRIPT = Path(__file__).with_name("clip_vision_probe.py")
CLIP_VISION_FIXTURE_VERSION = "1"
CLIP_VISION_NAME = "steer_test_vitl_random.safetensors"  # its name in the test server's models/clip_vision
TINY_CLIP_FOLDER = "tiny-clip"  # in the test server's models/steer


def run_clip_vision_probe(command: str, path: Path, timeout: float) -> subprocess.CompletedProcess:
    return run_script(PROBE_SCRIPT, command, path, timeout=timeout)


def cached_clip_vision_file() -> Path:
    """A ViT-L/14 CLIP vision file with random weights (~600 MB), built once and cached."""
    filename = f"clip_vision_vitl_random-v{CLIP_VISION_FIXTURE_VERSION}.safetensors"
    return cached_model(filename, "clip_vision_vitl.lock", lambda partial: run_clip_vision_probe("build", partial, timeout=900))


def stage_tiny_clip(models_dir: Path) -> str:
    """The tiny CLIP folder (text and vision towers, tokenizer) in models/steer; returns its name."""
    from unit.tiny_models import write_tiny_clip

    folder = Path(models_dir) / "steer" / TINY_CLIP_FOLDER
    if not (folder / "config.json").exists():
        write_tiny_clip(folder)
    return TINY_CLIP_FOLDER


def stage_reward_head(models_dir: Path, name: str, seed: int = 0) -> str:
    """A random head (Linear, Dropout, Linear: the LAION aesthetic predictor's layout, shortened) on the
    tiny CLIP's embedding, as models/steer/NAME; returns NAME."""
    import json

    import torch
    from safetensors.torch import save_file

    clip_config = json.loads((Path(models_dir) / "steer" / stage_tiny_clip(models_dir) / "config.json").read_text())
    torch.manual_seed(seed)
    layers = torch.nn.Sequential(torch.nn.Linear(int(clip_config["projection_dim"]), 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    path = Path(models_dir) / "steer" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"layers.{key}": value.contiguous() for key, value in layers.state_dict().items()}, str(path))
    return name


def stage_clip_vision(models_dir: Path) -> str:
    """The cached random CLIP vision file in models/clip_vision; returns its name there."""
    link = Path(models_dir) / "clip_vision" / CLIP_VISION_NAME
    if not link.is_symlink() and not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(cached_clip_vision_file())
    return CLIP_VISION_NAME


def stage_concept(models_dir: Path, name: str, category: str = "dog", seed: int = 0) -> str:
    """A saved AttnDreamBooth concept for the fixture checkpoint (models/embeddings + models/loras).

    The token is a random CLIP-L vector; the UNet change is random on every cross-attention key and
    value projection, saved as a rank-4 LoRA: the files and metadata Steer AttnDreamBooth Train writes.
    """
    import torch
    from safetensors import safe_open

    from steer.personalize.export import Concept, concept_paths, write_concept

    models_dir = Path(models_dir)
    if all(path.exists() for path in concept_paths(name, models_dir / "embeddings", models_dir / "loras").all()):
        return name
    prefix = "model.diffusion_model."
    generator = torch.Generator().manual_seed(seed)
    deltas = {}
    with safe_open(str(models_dir / "checkpoints" / CHECKPOINT_NAME), "pt") as checkpoint:
        for key in checkpoint.keys():
            if key.startswith(prefix) and (key.endswith("attn2.to_k.weight") or key.endswith("attn2.to_v.weight")):
                shape = checkpoint.get_slice(key).get_shape()
                deltas[key[len(prefix) :]] = torch.randn(*shape, generator=generator) * 0.05
    assert deltas, f"no cross-attention weights in {CHECKPOINT_NAME}"
    concept = Concept(
        token_embeddings={"clip_l": torch.randn(1, 768, generator=generator) * 0.02},
        unet_deltas=deltas,
        category=category,
        metadata={"preset": "test fixture", "base_model": CHECKPOINT_NAME, "trained_in": "tests/integration/fixture_models.py"},
    )
    write_concept(concept, name, models_dir / "embeddings", models_dir / "loras", unet_format="lora", rank=4, overwrite=True)
    return name
