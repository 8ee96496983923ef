"""Reading a held-out concept from pixels: its identity, and how many things an image shows.

Nothing here learned the concepts. Identity is measured analytically against the concept's own
geometry and colours, so a method can only score by drawing the subject:
- outline: soft-mask IoU of the image's largest foreground blob with the concept's outline, both
  cropped to their bounding square at 16x16 (judges.normalized_masks), best over rotations of
  ±30° and a mirror (the training augmentation flips photos);
- colour: the blob's share of pixels whose nearest world colour is one of the concept's; for a
  two-toned concept, scaled down when the second colour holds under a quarter of the blob;
- identity = the mean of the two, in [0, 1]; 0 when the image shows no blob.
A third reading, the cosine of the world shape judge's hidden features with the photos', comes
from a network that was trained on the eight world shapes only (judge split and rendering); it
is reported beside identity, not in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kornia.contrib import connected_components

from .concepts import Concept
from .judges import MIN_FOREGROUND, PALETTE, Judges, foreground, normalized_masks
from .render import JUDGE_STYLE
from .scene import COLOR_NAMES, SIZE_RADII

ROTATIONS = tuple(range(-30, 31, 5))
MINORITY_SHARE = 0.25


def blobs(images: torch.Tensor) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """(soft foreground (B, H, W), per image its connected foreground blobs as bool masks, largest first)."""
    soft, hard = foreground(images.float().clamp(0, 1))
    labels = connected_components(hard[:, None].float(), num_iterations=4 * hard.shape[-1] * hard.shape[-2] // 8)[:, 0]
    out = []
    for index in range(images.shape[0]):
        found = [labels[index] == value for value in labels[index].unique() if value != 0]
        found = [mask for mask in found if int(mask.sum()) >= MIN_FOREGROUND]
        out.append(sorted(found, key=lambda mask: -int(mask.sum())))
    return soft, out


def pixel_colors(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W) index into COLOR_NAMES of each pixel's nearest world colour."""
    b, _, h, w = images.shape
    return torch.cdist(images.float().clamp(0, 1).permute(0, 2, 3, 1).reshape(-1, 3), PALETTE).argmin(1).view(b, h, w)


@dataclass
class IdentityJudge:
    """Identity of one concept, from references drawn from its outline (never from a model)."""

    concept: Concept
    references: torch.Tensor  # (R, 256) normalised masks over rotations and the mirror
    photo_features: torch.Tensor  # (64,) mean shape-judge features of its photos, for the cosine
    size_threshold: float  # bounding extent between its small and its large render
    shape_judge: torch.nn.Module

    @classmethod
    def build(cls, concept: Concept, judges: Judges, photos: list[torch.Tensor]) -> "IdentityJudge":
        renders = torch.stack([concept.render("black", degrees=d) for d in ROTATIONS])
        renders = torch.cat([renders, renders.flip(-1)])
        soft, hard = foreground(renders)
        references = normalized_masks(soft, hard)
        with torch.no_grad():
            features = judges.shape_judge.body(normalized_masks(*foreground(torch.stack(photos)))).mean(0)
        extents = []
        for size in ("small", "large"):
            _, found = blobs(concept.render("black", radius=SIZE_RADII[size], style=JUDGE_STYLE)[None])
            ys, xs = torch.nonzero(found[0][0], as_tuple=True)
            extents.append(max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1) / renders.shape[-1])
        return cls(concept, references, features, sum(extents) / 2, judges.shape_judge)

    def colour_match(self, colors: torch.Tensor) -> float:
        """`colors`: the blob's pixel colour indices."""
        wanted = [COLOR_NAMES.index(name) for name in self.concept.colors]
        shares = [float((colors == index).float().mean()) for index in wanted]
        match = sum(shares)
        if len(shares) == 2:
            match *= min(1.0, min(shares) / max(sum(shares), 1e-9) / MINORITY_SHARE)
        return match

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> dict[str, list[float]]:
        """Per image: outline IoU, colour match, identity, judge-feature cosine, extent of the largest blob."""
        soft, found = blobs(images)
        colors = pixel_colors(images)
        out = {"outline": [], "colour": [], "identity": [], "judge_cosine": [], "extent": []}
        for index, image_blobs in enumerate(found):
            if not image_blobs:
                for key in out:
                    out[key].append(0.0)
                continue
            blob = image_blobs[0]
            mask = normalized_masks((soft[index] * blob)[None], blob[None])
            iou = float((torch.minimum(mask, self.references).sum(1) / torch.maximum(mask, self.references).sum(1).clamp_min(1e-9)).max())
            colour = self.colour_match(colors[index][blob])
            cosine = float(torch.cosine_similarity(self.shape_judge.body(mask)[0], self.photo_features, dim=0))
            ys, xs = torch.nonzero(blob, as_tuple=True)
            extent = max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1) / images.shape[-1]
            for key, value in zip(out, (iou, colour, (iou + colour) / 2, cosine, extent)):
                out[key].append(value)
        return out

    def concept_share(self, images: torch.Tensor, masks: torch.Tensor) -> list[float]:
        """Per image, the share of the pixels under `masks` (B, H, W) whose nearest colour is the concept's."""
        colors = pixel_colors(images)
        wanted = torch.zeros_like(colors, dtype=torch.bool)
        for name in self.concept.colors:
            wanted |= colors == COLOR_NAMES.index(name)
        return [float(wanted[i][masks[i]].float().mean()) if masks[i].any() else 0.0 for i in range(images.shape[0])]
