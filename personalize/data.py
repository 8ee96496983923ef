"""The training photos and their augmentation (official DreamBoothDataset, research file §1.1):

    1. with p = 0.75 rotate by U(−45°, 45°), canvas expanded to hold the whole photo
    2. resize the short side to the training size
    3. with p = 0.25 flip horizontally
    4. random crop to size × size, then scale to [−1, 1]

Every random draw comes from a torch.Generator the caller passes, so a step's batch is a pure
function of (seed, stage, step): resuming after Cancel replays exactly the same batches.
One difference from the official code: rotation interpolates bilinearly, where torchvision's
RandomRotation defaults to nearest-neighbour (which leaves jagged edges on the photo).

A pool of augmented views (`views_per_image` K > 0) trades augmentation variety for speed:
each photo gets K augmented views drawn once from `view_seed`, and a sample picks one of them
(uniformly, with the sample's generator). Everything downstream of the pixels still varies
per sample: the VAE latent is re-sampled from its distribution, and the noise and timestep are
fresh. Because the same K·N pixel tensors come back again and again, a backbone can encode
each view with the VAE once and cache its latent distribution (the ComfyUI backbone does; at
512 px the VAE encoder costs about a third of a training step's compute). K = 0 is the official
code's behaviour: a fresh augmentation for every sample.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from kornia.geometry.transform import get_rotation_matrix2d, hflip, resize, warp_affine

from ..errors import SteerError

MIN_IMAGES = 3
MAX_IMAGES = 20
MAX_VIEWS_PER_IMAGE = 1024
# The front ends' default pool size (the node's augmented_views, `steer train --augmented-views`):
# 16 views per photo vary the batches well while the VAE runs only 16·N times in all.
DEFAULT_VIEWS = 16


@dataclass(frozen=True)
class AugmentationConfig:
    rotation_probability: float = 0.75
    max_rotation_degrees: float = 45.0
    flip_probability: float = 0.25


@dataclass(frozen=True)
class AugmentationDraw:
    """The random choices for one sample; drawn in a fixed order, so always the same count."""

    rotate: bool
    angle: float  # degrees, counter-clockwise
    flip: bool
    crop_y: float  # where the crop sits in the free range, as fractions in [0, 1)
    crop_x: float

    @classmethod
    def sample(cls, config: AugmentationConfig, generator: torch.Generator) -> "AugmentationDraw":
        u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
        return cls(
            rotate=u[0] < config.rotation_probability,
            angle=(2 * u[1] - 1) * config.max_rotation_degrees,
            flip=u[2] < config.flip_probability,
            crop_y=u[3],
            crop_x=u[4],
        )


def rotate_expanded(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate (C, H, W) counter-clockwise about its centre onto a canvas that holds all of it
    (torchvision's `expand=True`); the corners are filled with black."""
    _, height, width = image.shape
    radians = math.radians(degrees)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    new_width = max(1, math.ceil(width * cos + height * sin - 1e-6))
    new_height = max(1, math.ceil(width * sin + height * cos - 1e-6))
    center = torch.tensor([[(width - 1) / 2, (height - 1) / 2]], dtype=image.dtype)
    matrix = get_rotation_matrix2d(center, torch.tensor([degrees], dtype=image.dtype), torch.ones(1, 2, dtype=image.dtype))
    matrix[:, 0, 2] += (new_width - width) / 2
    matrix[:, 1, 2] += (new_height - height) / 2
    return warp_affine(image[None], matrix, (new_height, new_width), mode="bilinear", padding_mode="zeros", align_corners=True)[0]


def augment(image: torch.Tensor, size: int, draw: AugmentationDraw) -> torch.Tensor:
    """(C, H, W) in [0, 1] -> (C, size, size) in [-1, 1]."""
    if draw.rotate:
        image = rotate_expanded(image, draw.angle)
    image = resize(image[None], size, side="short", interpolation="bilinear", antialias=True)[0]
    if draw.flip:
        image = hflip(image)
    _, height, width = image.shape
    top = min(int(draw.crop_y * (height - size + 1)), height - size)
    left = min(int(draw.crop_x * (width - size + 1)), width - size)
    image = image[:, top : top + size, left : left + size]
    return (image.clamp(0, 1) * 2 - 1).contiguous()


def _as_rgb(image: torch.Tensor, position: int) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise SteerError(f"image {position + 1} must be a (channels, height, width) tensor, got {getattr(image, 'shape', type(image))}")
    channels, height, width = image.shape
    if channels not in (1, 3, 4):
        raise SteerError(f"image {position + 1} has {channels} channels; give grayscale, RGB or RGBA images")
    if height < 8 or width < 8:
        raise SteerError(f"image {position + 1} is {width}×{height} pixels; use photos of at least 8×8 (ideally ≥ 512)")
    image = image.detach().float().cpu()
    if not torch.isfinite(image).all():
        raise SteerError(f"image {position + 1} contains NaN or infinite values")
    if channels == 1:
        image = image.expand(3, -1, -1)
    return image[:3].clamp(0, 1)


class TrainingImages:
    """3–20 photos of one subject, any sizes, as (C, H, W) float tensors in [0, 1]."""

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        resolution: int,
        augmentation: AugmentationConfig = AugmentationConfig(),
        views_per_image: int = 0,
        view_seed: int = 0,
    ):
        count = len(images)
        if not MIN_IMAGES <= count <= MAX_IMAGES:
            raise SteerError(
                f"AttnDreamBooth trains on {MIN_IMAGES} to {MAX_IMAGES} photos of one subject; got {count}. "
                f"{'Add more photos' if count < MIN_IMAGES else 'Pick the best ' + str(MAX_IMAGES)}."
            )
        if not (isinstance(views_per_image, int) and 0 <= views_per_image <= MAX_VIEWS_PER_IMAGE):
            raise SteerError(
                f"augmented views per photo must be a whole number in [0, {MAX_VIEWS_PER_IMAGE}] (0 = a fresh augmentation every "
                f"sample), got {views_per_image}"
            )
        self.resolution = resolution
        self.augmentation = augmentation
        self.views_per_image = views_per_image
        self.view_seed = int(view_seed)
        self.images = [self._shrink(_as_rgb(image, position)) for position, image in enumerate(images)]

    @classmethod
    def from_batch(cls, images: torch.Tensor, resolution: int, channels_last: bool = True, **kwargs) -> "TrainingImages":
        """From one (B, H, W, C) tensor (ComfyUI's IMAGE layout) or (B, C, H, W) with channels_last=False."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise SteerError(f"expected a batch of images (B, H, W, C), got {getattr(images, 'shape', type(images))}")
        return cls([image.permute(2, 0, 1) if channels_last else image for image in images], resolution, **kwargs)

    def _shrink(self, image: torch.Tensor) -> torch.Tensor:
        # Rotation only grows the canvas, so after "resize short side to S" a photo is never shown
        # larger than S / its short side: pre-shrinking to short side S loses nothing and saves memory.
        if min(image.shape[1:]) > self.resolution:
            image = resize(image[None], self.resolution, side="short", interpolation="bilinear", antialias=True)[0]
        return image.contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint_bytes(self) -> bytes:
        """A content summary for checkpoint identity (same photos -> same bytes)."""
        pool = f"views={self.views_per_image},seed={self.view_seed};".encode() if self.views_per_image else b""
        return pool + b"".join(str(tuple(image.shape)).encode() + image.numpy().tobytes() for image in self.images)

    def sample(self, index: int, generator: torch.Generator) -> torch.Tensor:
        if self.views_per_image:
            view = int(torch.randint(self.views_per_image, (1,), generator=generator))
            return self.view(index, view)
        draw = AugmentationDraw.sample(self.augmentation, generator)
        return augment(self.images[index], self.resolution, draw)

    def view(self, index: int, view: int) -> torch.Tensor:
        """View `view` of photo `index` in the pool: the same pixels every time it is asked for."""
        draw = AugmentationDraw.sample(self.augmentation, sample_generator(self.view_seed, index, view))
        return augment(self.images[index], self.resolution, draw)

    def all_views(self) -> Iterator[torch.Tensor]:
        """Every view of the pool (nothing when there is no pool), e.g. to encode them up front."""
        for index in range(len(self.images)):
            for view in range(self.views_per_image):
                yield self.view(index, view)


def image_order(image_count: int, repeats: int, seed: int, positions: Sequence[int]) -> list[int]:
    """Which photo fills each sample position of a stage: the official dataset (every photo ×
    `repeats`, shuffled each epoch), as a pure function of the position."""
    epoch_length = image_count * repeats
    order: list[int] = []
    permutations: dict[int, torch.Tensor] = {}
    for position in positions:
        epoch, offset = divmod(position, epoch_length)
        if epoch not in permutations:
            generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
            permutations[epoch] = torch.randperm(epoch_length, generator=generator)
        order.append(int(permutations[epoch][offset]) % image_count)
    return order


def mix_seed(*numbers: int) -> int:
    """A stable 63-bit seed from several integers (Python's hash() is salted per process)."""
    digest = hashlib.sha256(",".join(str(number) for number in numbers).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_generator(*numbers: int) -> torch.Generator:
    """A CPU generator seeded from (seed, stage, step, sample...)."""
    return torch.Generator().manual_seed(mix_seed(*numbers))
