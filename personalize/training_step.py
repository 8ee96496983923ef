"""One optimizer step of AttnDreamBooth training, over any Backbone. The trainer runs its stages
with it, and the benchmarks time it, so they measure the step training really takes:

    trainable = trainable_group(backbone, stage.parameter_group)   # that group trains, all else frozen
    step = TrainingStep.for_stage(backbone, stage, trainable, prompt, autocast_dtype)
    with step.attention_capture():
        losses = step(step_batch(images, plan.image_repeats, seed, stage_index, number, stage.batch_size), number + 1)

Per step (official train_attndreambooth.py): a batch of augmented photos -> latents -> x_t at
t ~ U{0..T-1} -> model output -> MSE against ε (or v) + the cross-attention regularizer ->
AdamW step with a constant learning rate, no gradient clipping. Every random draw of a sample
comes from that sample's generator, seeded by (seed, stage, step, sample), so a step's batch is
a pure function of its position: a resumed run replays exactly the same batches.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F

from ..errors import SteerError
from .backbone import Backbone, EncodedPrompt
from .data import TrainingImages, image_order, mix_seed, sample_generator
from .regularizer import AttentionCapture, attention_regularizer
from .stages import TOKEN, StageConfig


@dataclass(frozen=True)
class StepBatch:
    pixels: torch.Tensor  # (batch, 3, size, size) in [-1, 1]
    generators: list[torch.Generator]  # one per sample: its latent, noise and timestep draws


def step_batch(images: TrainingImages, image_repeats: int, seed: int, stage_index: int, step: int, batch_size: int) -> StepBatch:
    """The photos and generators of step `step` (counted from 0) of stage `stage_index`."""
    positions = range(step * batch_size, (step + 1) * batch_size)
    photo_indices = image_order(len(images), image_repeats, mix_seed(seed, stage_index), positions)
    generators = [sample_generator(seed, stage_index, step, sample) for sample in range(batch_size)]
    pixels = torch.stack([images.sample(index, generator) for index, generator in zip(photo_indices, generators)])
    return StepBatch(pixels, generators)


def trainable_group(backbone: Backbone, group: str) -> dict[str, torch.nn.Parameter]:
    """Freeze every parameter group, then unfreeze `group` and return its parameters."""
    groups = backbone.parameter_groups()
    for parameters in groups.values():
        for parameter in parameters.values():
            parameter.requires_grad_(False)
    trainable = dict(groups[group])
    for name, parameter in trainable.items():
        if parameter.dtype != torch.float32:
            raise TypeError(f"trainable parameter {group}/{name} is {parameter.dtype}; backbones keep trainable weights in float32")
        parameter.requires_grad_(True)
    return trainable


@dataclass(frozen=True)
class TrainingStep:
    """Everything a stage's steps share, built once per stage; calling it runs one step."""

    backbone: Backbone
    stage: StageConfig
    prompt: str
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    capture: AttentionCapture | None  # None: no regularizer (its weights are zero)
    frozen_prompt: EncodedPrompt | None  # the prompt, encoded once, when the token is not trained

    @classmethod
    def for_stage(
        cls,
        backbone: Backbone,
        stage: StageConfig,
        trainable: Mapping[str, torch.nn.Parameter],
        prompt: str,
        autocast_dtype: torch.dtype | None,
    ) -> "TrainingStep":
        optimizer = torch.optim.AdamW(
            list(trainable.values()),
            lr=stage.learning_rate,
            betas=stage.adam_betas,
            eps=stage.adam_epsilon,
            weight_decay=stage.weight_decay,
        )
        scaler = torch.amp.GradScaler(backbone.device.type, enabled=autocast_dtype == torch.float16)
        capture = AttentionCapture() if stage.regularizer.enabled else None
        frozen_prompt = None
        if stage.parameter_group != TOKEN:  # the text side is constant: encode once
            with torch.no_grad():
                frozen_prompt = backbone.encode_prompt(prompt)
        return cls(backbone, stage, prompt, optimizer, scaler, autocast_dtype, capture, frozen_prompt)

    def attention_capture(self) -> AbstractContextManager:
        """Open around the steps: routes attn2 through the capture when the regularizer is on."""
        return self.backbone.attention_capture(self.capture) if self.capture else nullcontext()

    def __call__(self, batch: StepBatch, number: int) -> dict[str, float]:
        """One optimizer step on `batch`; `number` (from 1) only names the step in errors."""
        backbone, stage, capture, device = self.backbone, self.stage, self.capture, self.backbone.device
        size, micro = stage.batch_size, stage.micro_batch_size
        self.optimizer.zero_grad(set_to_none=True)
        diffusion_total = regularizer_total = 0.0
        for first in range(0, size, micro):
            part = slice(first, first + micro)
            part_generators = batch.generators[part]
            latents = backbone.encode_images(batch.pixels[part], part_generators)
            noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in part_generators]).to(device)
            timesteps = torch.cat([torch.randint(0, backbone.schedule.num_timesteps, (1,), generator=g) for g in part_generators])
            noisy = backbone.schedule.add_noise(latents, noise, timesteps)
            target = backbone.schedule.target(latents, noise, timesteps)

            with torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
                prompt = self.frozen_prompt if self.frozen_prompt is not None else backbone.encode_prompt(self.prompt)
                text = prompt.expand(latents.shape[0])
                recording = capture.recording(prompt.token_index, prompt.category_index) if capture else nullcontext([])
                with recording as maps:
                    prediction = backbone.predict_noise(noisy, timesteps.to(device), text.embeddings, text.pooled)
            # MSE is a mean over the batch: each micro-batch carries its share. The regularizer
            # is a sum over the batch: each micro-batch adds its items in full.
            diffusion = F.mse_loss(prediction.float(), target.float()) * (micro / size)
            regularizer = attention_regularizer(maps, stage.regularizer) if capture else diffusion.new_zeros(())
            loss = diffusion + regularizer
            if not torch.isfinite(loss):
                raise SteerError(
                    f"the loss became {loss.item()} at {stage.name} step {number}; lower that stage's learning rate "
                    f"or use precision 'fp32'/'bf16' instead of 'fp16'"
                )
            self.scaler.scale(loss).backward()
            diffusion_total += diffusion.item()
            regularizer_total += regularizer.item()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": diffusion_total + regularizer_total, "diffusion": diffusion_total, "regularizer": regularizer_total}
