"""The text side of the diffusers backbone: one `TextTower` per CLIP text encoder, each with its own
learned vector for [V].

SD1.x and SD2.x have one encoder (its last hidden state; the SD2 folder's encoder already ends at
the penultimate layer). SDXL has two, CLIP-L and OpenCLIP-G: both give their penultimate hidden
state without the final layer norm, concatenated along the width (768 + 1280 = 2048), and CLIP-G's
projected pooled vector joins the UNet's added conditioning. This is what diffusers' SDXL pipeline
and ComfyUI's SDXLClipModel both compute.

The new token never enters a tokenizer: the prompt is tokenized around "[V]" and a forward hook
on the encoder's token-embedding layer writes the tower's trainable vector into that slot, so the
encoder itself is never modified and gradients reach the vector through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .prompt import category_token_id, check_prompt_length, split_at_placeholders

# ComfyUI's embedding-file key per single encoder's width (comfy/sd1_clip.py, text_encoders/sd2_clip.py).
SINGLE_ENCODER_KEYS = {768: "clip_l", 1024: "clip_h"}
SDXL_KEYS = ("clip_l", "clip_g")


@dataclass
class TextTower:
    key: str  # the embedding file's key for this encoder's vector
    encoder: torch.nn.Module  # transformers CLIPTextModel (or ...WithProjection for SDXL's CLIP-G)
    tokenizer: object  # transformers CLIPTokenizer
    token: torch.nn.Parameter  # the learned vector, float32
    penultimate: bool = False  # SDXL: hidden_states[-2], no final layer norm; else the last hidden state
    pooled: bool = False  # SDXL's CLIP-G: also gives the projected pooled vector (text_embeds)

    @property
    def width(self) -> int:
        return self.encoder.get_input_embeddings().weight.shape[1]

    def word_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def max_length(self) -> int:
        # The encoder's positions bound it: some tokenizer folders say 8192 or "very large".
        positions = self.encoder.config.max_position_embeddings
        length = self.tokenizer.model_max_length
        return min(length, positions) if 0 < length else positions

    def reset(self, category: str) -> None:
        with torch.no_grad():
            row = self.encoder.get_input_embeddings().weight[category_token_id(category, self.word_ids)]
            self.token.copy_(row.float())

    def encode(self, prompt: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
        """(embeddings (1, tokens, width), pooled (1, width) or None, [V] slots) with this tower's vector at
        every [V] (any number of them, or none)."""
        pieces = split_at_placeholders(prompt, self.word_ids)
        ids, slots = [self.tokenizer.bos_token_id, *pieces[0]], []
        for after_ids in pieces[1:]:
            # The slot's id is irrelevant (the hook overwrites its embedding); the category's keeps it in-vocabulary.
            slots.append(len(ids))
            ids += [after_ids[0], *after_ids]
        ids.append(self.tokenizer.eos_token_id)
        max_length = self.max_length()
        check_prompt_length(len(ids), max_length)
        ids += [self.tokenizer.pad_token_id] * (max_length - len(ids))

        def insert_token(module, inputs, output):
            vector = self.token.to(output.dtype).view(1, 1, -1).expand(output.shape[0], 1, -1)
            for slot in slots:
                output = torch.cat([output[:, :slot], vector, output[:, slot + 1 :]], dim=1)
            return output

        handle = self.encoder.get_input_embeddings().register_forward_hook(insert_token)
        try:
            embeddings, pooled = self._run(torch.tensor([ids], device=device))
        finally:
            handle.remove()
        return embeddings, pooled, slots

    def encode_plain(self, prompt: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.max_length(), truncation=True, return_tensors="pt").input_ids
        return self._run(ids.to(device))

    def _run(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        output = self.encoder(ids, output_hidden_states=self.penultimate)
        embeddings = output.hidden_states[-2] if self.penultimate else output[0]
        return embeddings, (output.text_embeds if self.pooled else None)


def encode_towers(towers: list[TextTower], prompt: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    """Every tower's embeddings side by side along the width, the pooled vector, and the [V] slots
    (the towers share one vocabulary, so the slots agree)."""
    parts, pooled, slots = [], None, None
    for tower in towers:
        embeddings, tower_pooled, tower_slots = tower.encode(prompt, device)
        if slots is not None and tower_slots != slots:
            raise RuntimeError(f"the text encoders place [V] differently ({slots} vs {tower_slots}); their tokenizers differ")
        parts.append(embeddings)
        pooled = tower_pooled if tower_pooled is not None else pooled
        slots = tower_slots
    return torch.cat(parts, dim=-1), pooled, slots


def encode_towers_plain(towers: list[TextTower], prompt: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    parts, pooled = [], None
    for tower in towers:
        embeddings, tower_pooled = tower.encode_plain(prompt, device)
        parts.append(embeddings)
        pooled = tower_pooled if tower_pooled is not None else pooled
    return torch.cat(parts, dim=-1), pooled
