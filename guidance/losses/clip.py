"""CLIP guidance: toward a text prompt, toward reference images, and toward a reference style.

Every loss here scores images through an `ImageEncoder`: a CLIP vision tower with
differentiable preprocessing. Two encoders exist: `HFCLIPEncoder` below (a Hugging Face CLIP
folder) and the ComfyUI adapter in nodes/comfy_clip_vision.py (a stock CLIP_VISION model).

Distances between embeddings (both on unit-normalised vectors):
- spherical: 2·arcsin(‖a − b‖ / 2)², the squared great-circle distance as in diffusers'
  clip_guided_stable_diffusion. 0 when equal, about 0.8 for an unrelated CLIP text/image pair.
- cosine: 1 − cos(a, b). 0 when equal, about 0.7–0.8 for an unrelated text/image pair.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from ...errors import SteerError
from ..hf_models import GuidanceModel
from ..preprocess import FITS
from .reference import ReferenceImages


def spherical_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    # The clamp only guards exact antipodes, where arcsin's derivative is infinite.
    return (a - b).norm(dim=-1).div(2).clamp(max=1 - 1e-6).arcsin().pow(2).mul(2)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1 - F.cosine_similarity(a, b, dim=-1)


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "spherical": spherical_distance,
    "cosine": cosine_distance,
}


def _distance(name: str):
    try:
        return DISTANCES[name]
    except KeyError:
        raise SteerError(f"distance must be one of {tuple(DISTANCES)}, got {name!r}") from None


class ImageEncoder(Protocol):
    """A differentiable CLIP vision tower. Inputs are images (B, C, H, W) in [0, 1], any device."""

    name: str
    num_blocks: int  # transformer blocks in the tower
    embed_dim: int  # width of `embed`'s output

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) float32 image embeddings in the joint text/image space (not normalised)."""
        ...

    def block_tokens(self, images: torch.Tensor, block: int) -> torch.Tensor:
        """(B, N, D) float32 patch tokens (class token dropped) output by transformer block `block` (0-based)."""
        ...


class _StopForward(Exception):
    """Raised by a forward hook to skip the rest of the tower once the wanted block has run."""


class HFCLIPEncoder:
    """A Hugging Face CLIP folder (CLIPModel, CLIPVisionModel[WithProjection]) as an ImageEncoder."""

    def __init__(self, model: GuidanceModel, fit: str = "stretch"):
        if model.kind not in ("clip", "clip_vision"):
            raise SteerError(
                f"model {model.name!r} is an image classifier, not CLIP; load a CLIP folder for CLIP image, text and style losses"
            )
        if fit not in FITS:
            raise SteerError(f"fit must be one of {FITS}, got {fit!r}")
        self.model = model
        self.preprocess = model.preprocess(fit)
        vision_config = model.config.get("vision_config", model.config) if model.kind == "clip" else model.config
        self.num_blocks = int(vision_config.get("num_hidden_layers", 12))
        # CLIPModel and CLIPVisionModelWithProjection project to projection_dim; a bare CLIPVisionModel gives its width.
        projected = "CLIPVisionModel" not in (model.config.get("architectures") or [])
        self.embed_dim = int(model.config.get("projection_dim", 512) if projected else vision_config.get("hidden_size", 768))
        self.name = model.name

    def _towers(self, device: torch.device):
        module = self.model.placed(device)
        vision = module.vision_model if hasattr(module, "vision_model") else module
        projection = getattr(module, "visual_projection", None)
        return module, vision, projection, next(module.parameters()).dtype

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        _, vision, projection, dtype = self._towers(images.device)
        pooled = vision(pixel_values=self.preprocess(images).to(dtype)).pooler_output
        return (projection(pooled) if projection is not None else pooled).float()

    def block_tokens(self, images: torch.Tensor, block: int) -> torch.Tensor:
        if not 0 <= block < self.num_blocks:
            raise SteerError(f"block must be between 0 and {self.num_blocks - 1} for {self.name!r}, got {block}")
        _, vision, _, dtype = self._towers(images.device)
        captured = []

        def keep_and_stop(module, args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _StopForward

        handle = vision.encoder.layers[block].register_forward_hook(keep_and_stop)
        try:
            vision(pixel_values=self.preprocess(images).to(dtype))
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured[0][:, 1:].float()

    def embed_text(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        """(len(prompts), D) float32 text embeddings, without gradient."""
        if self.model.kind != "clip":
            raise SteerError(
                f"model {self.model.name!r} is a vision-only CLIP and has no text encoder; load a full CLIP folder for text guidance"
            )
        tokenizer = self.model.tokenizer()
        module, _, _, _ = self._towers(device)
        max_length = int(self.model.config.get("text_config", {}).get("max_position_embeddings", 77))
        tokens = tokenizer(prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            pooled = module.text_model(
                input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
            ).pooler_output
            return module.text_projection(pooled).float()


class _PerDevice:
    """A target computed once per device (reference embeddings, text embeddings, Gram matrices)."""

    def __init__(self, compute: Callable[[torch.device], torch.Tensor]):
        self._compute = compute
        self._values: dict[torch.device, torch.Tensor] = {}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self._values:
            # Outside inference mode: a target made inside a ComfyUI prompt would be an inference
            # tensor, which autograd cannot save for the backward pass of the distance.
            with torch.inference_mode(False), torch.no_grad():
                self._values[device] = self._compute(device).detach().clone()
        return self._values[device]


class CLIPTextLoss:
    """Toward a prompt and away from an optional negative prompt.

    loss = d(image, prompt) − negative_weight · d(image, negative_prompt)   (second term only with a negative)
    """

    def __init__(
        self,
        encoder: HFCLIPEncoder,
        prompt: str,
        negative_prompt: str = "",
        negative_weight: float = 0.5,
        distance: str = "spherical",
    ):
        if not prompt.strip():
            raise SteerError("the CLIP text loss needs a prompt: describe what the image should look like")
        if not negative_weight >= 0:
            raise SteerError(f"negative weight must be >= 0, got {negative_weight}")
        if not hasattr(encoder, "embed_text"):
            raise SteerError("the CLIP text loss needs a Hugging Face CLIP folder (a stock CLIP_VISION model has no text encoder)")
        encoder.model.tokenizer()  # fail now, at graph build time, if the folder has no tokenizer
        self.encoder = encoder
        self.distance = _distance(distance)
        self.negative_weight = float(negative_weight)
        prompts = [prompt.strip()] + ([negative_prompt.strip()] if negative_prompt.strip() else [])
        self._texts = _PerDevice(lambda device: encoder.embed_text(prompts, device))
        self.has_negative = len(prompts) == 2
        self.name = f"clip_text({prompt.strip()[:40]!r}" + (f", not {negative_prompt.strip()[:40]!r})" if self.has_negative else ")")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        embeds = self.encoder.embed(images)
        texts = self._texts.on(embeds.device)
        loss = self.distance(embeds, texts[0:1])
        if self.has_negative and self.negative_weight > 0:
            loss = loss - self.negative_weight * self.distance(embeds, texts[1:2])
        return loss


class CLIPImageLoss:
    """Toward the mean (unit-normalised) CLIP embedding of one or more reference images."""

    def __init__(self, encoder: ImageEncoder, reference: torch.Tensor, distance: str = "spherical"):
        self.encoder = encoder
        self.distance = _distance(distance)
        self.reference = ReferenceImages(reference, "CLIP image reference")
        self._target = _PerDevice(self._mean_embedding)
        self.name = f"clip_image({encoder.name})"

    def _mean_embedding(self, device: torch.device) -> torch.Tensor:
        refs = self.reference.original(device)
        return F.normalize(F.normalize(self.encoder.embed(refs), dim=-1).mean(dim=0, keepdim=True), dim=-1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        embeds = self.encoder.embed(images)
        return self.distance(embeds, self._target.on(embeds.device))


def gram(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) tokens → (B, D, D) Gram matrices, averaged over tokens so the size of the image does not matter."""
    return tokens.transpose(1, 2) @ tokens / tokens.shape[1]


class CLIPStyleLoss:
    """Style as in FreeDoM and MPGD: Gram matrices of an early CLIP vision block, sample against reference.

    loss = ‖G(image) − G(ref)‖_F / ‖G(ref)‖_F, with G(ref) averaged over the references. The
    relative form makes the value model-independent: 0 is the reference's style, about 1 unrelated.
    FreeDoM and MPGD take block 2 (the third block, `hidden_states[3]` in transformers).
    """

    def __init__(self, encoder: ImageEncoder, reference: torch.Tensor, block: int = 2):
        if not 0 <= block < encoder.num_blocks:
            raise SteerError(f"style block must be between 0 and {encoder.num_blocks - 1} for this model, got {block}")
        self.encoder = encoder
        self.block = int(block)
        self.reference = ReferenceImages(reference, "style reference")
        self._target = _PerDevice(
            lambda device: gram(encoder.block_tokens(self.reference.original(device), self.block)).mean(dim=0, keepdim=True)
        )
        self.name = f"clip_style({encoder.name}, block {self.block})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        grams = gram(self.encoder.block_tokens(images, self.block))
        target = self._target.on(grams.device)
        return (grams - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1).clamp(min=1e-12)
