"""AttnDreamBooth's cross-attention map regularizer and the capture that feeds it.

Official code (modules/hook.py + train_attndreambooth.py; research file §2): for every
cross-attention (attn2) layer l and batch item b, the new token's map and the next token's
map (the category word) are reduced over heads × pixels jointly to a mean and an unbiased
variance, and

    L_attn = (1/L) Σ_l Σ_b [ w_mean·(μ_lb(V) − μ_lb(C))² + w_var·(σ²_lb(V) − σ²_lb(C))² ]

summed over the batch, averaged over the layers, nothing detached.

Only the two token columns of the attn2 probabilities are kept (in the graph); the official
hook keeps all 77 and also forces self-attention onto plain matmul-softmax, which this
capture does not: backbones route only attn2 through it, self-attention keeps SDPA.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .stages import RegularizerWeights


def split_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, heads·dim) -> (batch, heads, tokens, dim)"""
    batch, _, inner = tensor.shape
    return tensor.view(batch, -1, heads, inner // heads).transpose(1, 2)


def merge_heads(tensor: torch.Tensor) -> torch.Tensor:
    """(batch, heads, tokens, dim) -> (batch, tokens, heads·dim)"""
    batch, heads, _, head_dim = tensor.shape
    return tensor.transpose(1, 2).reshape(batch, -1, heads * head_dim)


def capturing_attention(query, key, value, capture: "AttentionCapture", scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(QKᵀ·scale [+ mask])·V over (batch, heads, tokens, dim) tensors, with the probabilities
    made explicit, in float32 even under autocast (as the official hook's plain attention at fp32),
    and handed to `capture.record` as (batch, heads, pixels, tokens). The result has value's dtype.
    Both backbones' attn2 run through this; cross-attention has only 77 keys, so it costs little."""
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores + mask.float()
        probabilities = scores.softmax(dim=-1)
        capture.record(probabilities)
        return torch.matmul(probabilities.to(value.dtype), value)


class AttentionCapture:
    """Collects cross-attention probabilities for the [V] and category positions.

    A backbone's attn2 layers call `record(probabilities)` with (batch, heads, pixels, tokens)
    probabilities while a `recording()` block is open. Outside one (e.g. when gradient
    checkpointing recomputes the forward during backward) nothing is stored.
    """

    def __init__(self):
        self._first_token: int | None = None
        self._maps: list[torch.Tensor] | None = None

    @property
    def is_recording(self) -> bool:
        return self._maps is not None

    @contextmanager
    def recording(self, token_index: int, category_index: int):
        """Yields the list the maps go into: one (batch, heads, pixels, 2) tensor per attn2 call,
        [..., 0] the new token and [..., 1] the category token."""
        if category_index != token_index + 1:
            # The regularizer's category token is by definition the one right after [V]; a slice
            # of two adjacent columns also saves no tensor for backward, which keeps gradient
            # checkpointing's recomputation (not recording) identical to the forward (recording).
            raise ValueError(f"the category token must directly follow the new token, got positions {token_index} and {category_index}")
        self._first_token = token_index
        self._maps = []
        try:
            yield self._maps
        finally:
            self._maps = None
            self._first_token = None

    def record(self, probabilities: torch.Tensor) -> None:
        if self._maps is not None:
            # A copy, so the full (…, 77) probabilities need not outlive a checkpointed block.
            self._maps.append(probabilities[..., self._first_token : self._first_token + 2].clone())


def token_statistics(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, heads, pixels, tokens) maps -> mean and unbiased variance over heads × pixels,
    each (batch, tokens), in float32."""
    per_token = maps.float().permute(0, 3, 1, 2).flatten(2)
    return per_token.mean(dim=-1), per_token.var(dim=-1, correction=1)


def attention_regularizer(layer_maps: list[torch.Tensor], weights: RegularizerWeights) -> torch.Tensor:
    """L_attn over the captured layers: summed over the batch, averaged over the layers."""
    if not layer_maps:
        raise RuntimeError("no cross-attention maps were captured: the backbone's attn2 capture is not installed")
    per_layer = []
    for maps in layer_maps:
        mean, variance = token_statistics(maps)
        mean_gap = mean[:, 0] - mean[:, 1]
        variance_gap = variance[:, 0] - variance[:, 1]
        per_layer.append((weights.mean * mean_gap.square() + weights.variance * variance_gap.square()).sum())
    return torch.stack(per_layer).mean()
