"""The VAE posterior of each distinct training view, computed once.

Backbones sample a fresh latent from N(mean, std²) for every sample (as the official code does
with `latent_dist.sample()`), so only the distribution needs caching. With a pool of augmented
views (TrainingImages(views_per_image=K)) the same K·N pixel tensors come back all the time and
the VAE encoder (about a third of a 512 px training step's compute) runs K·N times in all.
Views are recognised by content (a hash of their pixels), so the cache needs no help from the
trainer; a byte budget bounds it when there is no pool and every view is new.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable

import torch

DEFAULT_BUDGET_BYTES = 512 * 2**20  # a 512 px view's (mean, std) is 128 KiB

# (B, 3, H, W) pixels in [-1, 1] -> (mean, std), each (B, C, h, w) float32 on the CPU
Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def pixel_key(pixels: torch.Tensor) -> bytes:
    data = pixels.detach().float().cpu().contiguous()
    return hashlib.blake2b(str(tuple(data.shape)).encode() + data.numpy().tobytes(), digest_size=16).digest()


class LatentCache:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        self._entries: OrderedDict[bytes, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self.budget_bytes = budget_bytes
        self.encoded = 0  # views sent through the encoder so far

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, pixels: torch.Tensor) -> bool:
        return pixel_key(pixels) in self._entries

    def distribution(self, pixels: torch.Tensor, encode: Encoder) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) for a (B, 3, H, W) batch, encoding only the views not seen before."""
        keys = [pixel_key(image) for image in pixels]
        known = {key: self._entries[key] for key in keys if key in self._entries}
        for key in known:
            self._entries.move_to_end(key)
        missing = [index for index, key in enumerate(keys) if key not in known]
        if missing:
            mean, std = encode(pixels[missing])
            self.encoded += len(missing)
            for position, index in enumerate(missing):
                known[keys[index]] = (mean[position].float().cpu(), std[position].float().cpu())
                self._remember(keys[index], *known[keys[index]])
        return torch.stack([known[key][0] for key in keys]), torch.stack([known[key][1] for key in keys])

    def fill(self, views, encode: Encoder, batch_size: int = 8, before_batch: Callable[[], None] | None = None) -> int:
        """Encode these (3, H, W) views now (e.g. TrainingImages.all_views()); returns how many
        were new. `before_batch` runs before each encoder call (e.g. to honour a Cancel)."""
        added, pending = 0, []

        def flush():
            nonlocal added, pending
            if pending:
                if before_batch is not None:
                    before_batch()
                before = self.encoded
                self.distribution(torch.stack(pending), encode)
                added += self.encoded - before
                pending = []

        for view in views:
            if view not in self:
                pending.append(view)
            if len(pending) == batch_size:
                flush()
        flush()
        return added

    def _remember(self, key: bytes, mean: torch.Tensor, std: torch.Tensor) -> None:
        if key in self._entries:
            return
        self._entries[key] = (mean, std)
        self._bytes += 2 * mean.numel() * mean.element_size()
        while self._bytes > self.budget_bytes and len(self._entries) > 1:
            _, (old_mean, _) = self._entries.popitem(last=False)
            self._bytes -= 2 * old_mean.numel() * old_mean.element_size()


def sample_latents(mean: torch.Tensor, std: torch.Tensor, generators) -> torch.Tensor:
    """mean + std·ε with one ε per sample, each from that sample's generator (CPU draws, so the
    same seed gives the same latents on any device)."""
    noise = torch.stack([torch.randn(mean.shape[1:], generator=generator) for generator in generators])
    return mean + std * noise.to(mean.device, mean.dtype)
