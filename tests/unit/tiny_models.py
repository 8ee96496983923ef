"""Tiny Hugging Face model folders with random weights, written by tests (nothing is downloaded).

- write_tiny_clip: a CLIPModel (2 layers, width 32, 32 px images, 8 px patches) with a
  CLIPTokenizer built from a 26-letter vocabulary, and a CLIP preprocessor_config.json.
- write_tiny_clip_vision: the vision tower alone (CLIPVisionModelWithProjection), as IP-Adapter
  image-encoder folders hold it.
- write_tiny_classifier: a ViTForImageClassification with three named labels.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
LABELS = {0: "cat", 1: "dog", 2: "Golden Hour"}


def _save(model, folder: Path) -> None:
    try:
        model.save_pretrained(folder, safe_serialization=True)
    except TypeError:  # transformers 5 always writes safetensors and dropped the flag
        model.save_pretrained(folder)


def write_tiny_tokenizer(folder: Path) -> int:
    """A CLIP BPE tokenizer over lowercase letters (each letter, alone or word-final). Returns its vocab size."""
    from transformers import CLIPTokenizer

    vocab = {c: i for i, c in enumerate(string.ascii_lowercase)}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(string.ascii_lowercase)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    scratch = folder / "_bpe"
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "vocab.json").write_text(json.dumps(vocab))
    (scratch / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(scratch / "vocab.json"), str(scratch / "merges.txt"))
    tokenizer.save_pretrained(folder)
    for f in scratch.iterdir():
        f.unlink()
    scratch.rmdir()
    return len(vocab)


def write_tiny_clip(folder: Path, seed: int = 0, tokenizer: bool = True) -> Path:
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = 54
    if tokenizer:
        vocab_size = write_tiny_tokenizer(folder)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    _save(CLIPModel(config).eval(), folder)
    _write_clip_preprocessor(folder)
    return folder


def write_tiny_clip_vision(folder: Path, seed: int = 0) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16
    )
    torch.manual_seed(seed)
    _save(CLIPVisionModelWithProjection(config).eval(), folder)
    _write_clip_preprocessor(folder)
    return folder


def _write_clip_preprocessor(folder: Path) -> None:
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": 32},
                "do_center_crop": True,
                "crop_size": {"height": 32, "width": 32},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": CLIP_MEAN,
                "image_std": CLIP_STD,
                "resample": 3,
            }
        )
    )


def write_tiny_classifier(folder: Path, seed: int = 0) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        id2label=dict(LABELS),
        label2id={v: k for k, v in LABELS.items()},
    )
    torch.manual_seed(seed)
    _save(ViTForImageClassification(config).eval(), folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "ViTImageProcessor",
                "do_resize": True,
                "size": {"height": 32, "width": 32},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
                "resample": 2,
            }
        )
    )
    return folder
