"""Reward guidance: a small scoring head on the normalised CLIP image embedding, maximised.

    score = head(e / ‖e‖),  e = the CLIP image embedding;   loss = −score

This is how the LAION aesthetic predictor and similar scorers are built: an MLP of Linear layers
(the LAION one has dropouts and no activations between them) or a single Linear layer. A head
is read from a safetensors state dict; its layers are the 2-D `*.weight` tensors (with their
`*.bias`), taken in the order of the numbers in their names (`layers.0`, `layers.2`, ...).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import SteerError
from ...safe_files import read_safetensors
from .clip import ImageEncoder

ACTIVATIONS = {"none": None, "relu": F.relu, "gelu": F.gelu}


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class RewardHead:
    """A chain of Linear layers (float32) ending in one output, with an optional activation between layers."""

    def __init__(self, state: dict[str, torch.Tensor], activation: str = "none", name: str = "reward head"):
        if activation not in ACTIVATIONS:
            raise SteerError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        prefixes = sorted((k[: -len(".weight")] if k != "weight" else "" for k in state if k.endswith("weight")), key=_natural_key)
        layers = []
        for prefix in prefixes:
            dot = f"{prefix}." if prefix else ""
            weight, bias = state[f"{dot}weight"], state.get(f"{dot}bias")
            if weight.dim() != 2 or (bias is not None and tuple(bias.shape) != (weight.shape[0],)):
                raise SteerError(
                    f"{name}: {dot}weight has shape {tuple(weight.shape)}"
                    + (f" and its bias {tuple(bias.shape)}" if bias is not None else "")
                    + "; a reward head is made of Linear layers only (2-D weights, 1-D biases)"
                )
            with torch.inference_mode(False):  # built inside a ComfyUI prompt; autograd must be able to save them
                layers.append((weight.detach().float().clone(), None if bias is None else bias.detach().float().clone()))
        if not layers:
            raise SteerError(f"{name} holds no Linear layer (no tensor named *.weight); it is not a reward head")
        for (previous, _), (weight, _), prefix in zip(layers, layers[1:], prefixes[1:]):
            if weight.shape[1] != previous.shape[0]:
                raise SteerError(
                    f"{name}: layer {prefix!r} takes {weight.shape[1]} inputs but the layer before it gives {previous.shape[0]}; "
                    "the file's layers do not chain"
                )
        if layers[-1][0].shape[0] != 1:
            raise SteerError(f"{name} ends in {layers[-1][0].shape[0]} outputs; Steer's reward loss needs a head with one score output")
        self.layers = layers
        self.activation = ACTIVATIONS[activation]
        self.in_features = int(layers[0][0].shape[1])
        self.name = name
        self._placed: dict[torch.device, list] = {}

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, in_features) float → (B,) scores."""
        if embeddings.shape[-1] != self.in_features:
            raise SteerError(f"{self.name} scores {self.in_features}-d embeddings, got {embeddings.shape[-1]}-d")
        if embeddings.device not in self._placed:
            device = embeddings.device
            self._placed[device] = [(w.to(device), None if b is None else b.to(device)) for w, b in self.layers]
        x = embeddings.float()
        layers = self._placed[embeddings.device]
        for k, (weight, bias) in enumerate(layers):
            x = F.linear(x, weight, bias)
            if self.activation is not None and k < len(layers) - 1:
                x = self.activation(x)
        return x[:, 0]


def load_reward_head(path: str | Path, activation: str = "none") -> RewardHead:
    state, _ = read_safetensors(path)
    return RewardHead(state, activation=activation, name=Path(path).name)


class RewardLoss:
    """−score of a reward head on the normalised CLIP image embedding (see the module docstring)."""

    def __init__(self, encoder: ImageEncoder, head: RewardHead):
        dim = getattr(encoder, "embed_dim", None)
        if dim is not None and dim != head.in_features:
            raise SteerError(
                f"{head.name} scores {head.in_features}-d CLIP embeddings but {encoder.name!r} gives {dim}-d ones; "
                "connect the CLIP model the head was trained on (the LAION aesthetic heads: ViT-L/14 for 768, ViT-B/32 for 512)"
            )
        self.encoder = encoder
        self.head = head
        self.name = f"reward({head.name})"

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(F.normalize(self.encoder.embed(images), dim=-1))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return -self.score(images)
