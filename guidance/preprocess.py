"""Differentiable image preprocessing for loss models: resize, optional centre crop, normalise.

Model preprocessors (Hugging Face image processors, ComfyUI's clip_preprocess) go through PIL
or round to 8-bit levels; both cut the gradient. This does the same geometry and arithmetic
with torch ops only, so the gradient reaches every pixel the model sees.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..errors import SteerError

FITS = ("stretch", "center_crop")
RESAMPLES = ("bicubic", "bilinear")
# PIL resample codes used in preprocessor_config.json: 2 bilinear, 3 bicubic. Lanczos, box and
# hamming have no differentiable torch equivalent; bicubic is the closest.
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class ImagePreprocess:
    """images (B, C, H, W) in [0, 1] → the model's pixel_values (B, 3, size).

    fit "stretch": the whole image is resized to `size` (every pixel is scored and steered).
    fit "center_crop": the short side is resized to size / crop_fraction and the centre is cut
    out, as most models were trained; the borders then get no gradient.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bicubic"
    fit: str = "stretch"
    crop_fraction: float = 1.0
    value_scale: float = 1.0  # what the model expects for white: 1 for [0, 1] inputs, 255 for raw pixels

    def __post_init__(self):
        if len(self.size) != 2 or min(self.size) < 1:
            raise SteerError(f"model input size must be (height, width) >= 1, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise SteerError(f"image mean and std must be three values each (std > 0), got {self.mean}, {self.std}")
        if self.fit not in FITS:
            raise SteerError(f"fit must be one of {FITS}, got {self.fit!r}")
        if self.resample not in RESAMPLES:
            raise SteerError(f"resample must be one of {RESAMPLES}, got {self.resample!r}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise SteerError(f"crop fraction must be in (0, 1], got {self.crop_fraction}")

    def with_fit(self, fit: str) -> "ImagePreprocess":
        return replace(self, fit=fit)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise SteerError(f"images must be (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        height, width = self.size
        if self.fit == "stretch":
            images = self._resize(images, (height, width))
        else:
            short = min(images.shape[-2:])
            scale = max(height, width) / self.crop_fraction / short
            resized = (max(height, round(images.shape[-2] * scale)), max(width, round(images.shape[-1] * scale)))
            images = self._resize(images, resized)
            top, left = (resized[0] - height) // 2, (resized[1] - width) // 2
            images = images[:, :, top : top + height, left : left + width]
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images * self.value_scale - mean) / std

    def _resize(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(images.shape[-2:]) == size:
            return images
        # antialias matters when shrinking a 512-1024 px decode to 224: without it the model sees aliasing.
        return F.interpolate(images, size=size, mode=self.resample, align_corners=False, antialias=True)

    @classmethod
    def from_hf(cls, processor: dict, model_image_size: int | tuple[int, int] | None = None, fit: str = "stretch") -> "ImagePreprocess":
        """From a Hugging Face preprocessor_config.json (already parsed).

        `model_image_size` (the vision config's image_size) wins over the processor's size when
        both exist: a ViT's position embeddings only fit that size.
        """
        size = _hw(processor.get("size"))
        crop = _hw(processor.get("crop_size")) if processor.get("do_center_crop", processor.get("crop_size") is not None) else None
        shortest = processor["size"].get("shortest_edge") if isinstance(processor.get("size"), dict) else None
        if crop is not None:
            final = crop
        elif size is not None:
            final = size
        elif shortest is not None:
            final = (int(shortest), int(shortest))
        else:
            final = None
        if model_image_size is not None:
            final = _hw(model_image_size)
        if final is None:
            raise SteerError("preprocessor_config.json gives no image size ('size' or 'crop_size') and the model config has none either")

        crop_fraction = 1.0
        if crop is not None and shortest is not None and shortest > max(crop):
            crop_fraction = max(crop) / shortest  # e.g. resize to 256, crop 224
        elif processor.get("crop_pct"):
            crop_fraction = min(1.0, float(processor["crop_pct"]))

        if processor.get("do_normalize", True):
            if "image_mean" not in processor or "image_std" not in processor:
                raise SteerError("preprocessor_config.json must give image_mean and image_std (the model's normalisation)")
            mean, std = _three(processor["image_mean"]), _three(processor["image_std"])
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        value_scale = 255.0 * float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 255.0
        resample = _PIL_RESAMPLE.get(processor.get("resample"), "bicubic")
        return cls(size=final, mean=mean, std=std, resample=resample, fit=fit, crop_fraction=crop_fraction, value_scale=value_scale)


def _hw(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return (int(value), int(value))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    if isinstance(value, dict) and "height" in value and "width" in value:
        return (int(value["height"]), int(value["width"]))
    return None


def _three(values) -> tuple[float, float, float]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    return tuple(values * 3) if len(values) == 1 else tuple(values)
