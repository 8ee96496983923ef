"""The text side of the ComfyUI AttnDreamBooth backend: the learned [V] vector of each CLIP text
encoder (one for SD1.x/SD2.x, CLIP-L and CLIP-G for SDXL), spliced into ComfyUI's token lists.

- Each vector is a float32 tensor put into its encoder's token list as `(vector, 1.0)` where the
  word would be: ComfyUI's `process_tokens` splices tensor entries in as input embeddings, which
  is exactly what `embedding:<name>` does at inference time with the vector under that encoder's
  key ("clip_l", "clip_h", "clip_g") of the saved file.
- The prompt goes through the CLIP object's own `encode_token_weights` with ComfyUI's clip
  options, so SDXL gets its concatenated [CLIP-L | CLIP-G] states and CLIP-G's pooled vector as
  CLIPTextEncode computes them.
- `CLIPLayer.forward` adds residuals in place (`x += ...`), which breaks backward into the token:
  while open, the CLIP layers of *these* encoders get an out-of-place forward (instance
  attributes, restored on exit even on error).
"""

from __future__ import annotations

import torch

from ..patching import AttributePatch
from ..personalize.backbone import token_group, vector_copies
from ..personalize.prompt import category_token_id, check_prompt_length, split_at_placeholder
from .comfy_common import out_of_place_clip_layers
from .comfy_trainable import TextEncoder


class ComfyPromptEncoder:
    """Encodes training prompts with one learned vector per text encoder of a ComfyUI CLIP."""

    def __init__(self, clip, encoders: list[TextEncoder], *, pooled: bool):
        self._clip = clip
        self.encoders = encoders
        self._keeps_pooled = pooled  # SDXL: the UNet takes CLIP-G's pooled vector
        self.vectors = {
            encoder.embedding_key: torch.nn.Parameter(torch.zeros(encoder.width, dtype=torch.float32), requires_grad=False)
            for encoder in encoders
        }
        self._out_of_place = AttributePatch()

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return token_group(self.vectors)

    def open(self) -> None:
        """Move each vector to its encoder's device and make the encoders' CLIP layers out of place."""
        for encoder in self.encoders:
            device = encoder.encoder.transformer.get_input_embeddings().weight.device
            vector = self.vectors[encoder.embedding_key]
            self.vectors[encoder.embedding_key] = torch.nn.Parameter(vector.detach().to(device), requires_grad=False)
        for encoder in self.encoders:
            self._out_of_place.apply(out_of_place_clip_layers(encoder.encoder))

    def close(self) -> None:
        self._out_of_place.restore()

    def reset(self, category: str) -> None:
        with torch.no_grad():
            for encoder in self.encoders:
                table = encoder.encoder.transformer.get_input_embeddings().weight
                vector = self.vectors[encoder.embedding_key]
                vector.copy_(table[category_token_id(category, lambda text: word_ids(encoder, text))].to(vector.device, torch.float32))

    def embeddings(self) -> dict[str, torch.Tensor]:
        return vector_copies(self.vectors)

    def prompt_tokens(self, prompt: str) -> tuple[dict[str, list[list[tuple]]], int]:
        """ComfyUI's token dict for a prompt with one [V] (each encoder's list with its vector at [V],
        padded as its SDTokenizer pads) and [V]'s position, the same in every encoder."""
        tokens, positions = {}, set()
        for encoder in self.encoders:
            before_ids, after_ids = split_at_placeholder(prompt, lambda text: word_ids(encoder, text))
            tokenizer = encoder.tokenizer
            head = [tokenizer.start_token] if tokenizer.start_token is not None else []
            tail = [tokenizer.end_token] if tokenizer.end_token is not None else []
            vector = self.vectors[encoder.embedding_key]
            sequence = [(t, 1.0) for t in head + before_ids] + [(vector, 1.0)] + [(t, 1.0) for t in after_ids + tail]
            check_prompt_length(len(sequence), tokenizer.max_length)
            sequence += [(tokenizer.pad_token, 1.0)] * (tokenizer.max_length - len(sequence))
            tokens[encoder.token_key] = [sequence]
            positions.add(len(head) + len(before_ids))
        if len(positions) != 1:
            raise RuntimeError(f"the text encoders place [V] at different positions {sorted(positions)}; their tokenizers differ")
        return tokens, positions.pop()

    def encode_tokens(self, tokens) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What CLIP.encode_from_tokens does, minus its load call (the caller loaded the clone)."""
        model = self._clip.cond_stage_model
        model.reset_clip_options()
        if self._clip.layer_idx is not None:
            model.set_clip_options({"layer": self._clip.layer_idx})
        embeddings, pooled = model.encode_token_weights(tokens)[:2]
        return embeddings, (pooled if self._keeps_pooled else None)

    def encode_plain(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.encode_tokens(self._clip.tokenize(prompt))


def word_ids(encoder: TextEncoder, text: str) -> list[int]:
    """The encoder's token ids of `text` without start and end tokens."""
    tokenizer = encoder.tokenizer
    ids = tokenizer.tokenizer(text)["input_ids"]
    end = -1 if tokenizer.tokenizer_adds_end_token else None
    return list(ids[tokenizer.tokens_start : end])
