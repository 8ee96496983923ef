"""Training previews: an image of the concept from a fixed seed and prompt, made at the end of each
stage with the weights trained so far, by deterministic DDIM (eta 0) with classifier-free guidance
on the backbone being trained."""

from __future__ import annotations

import torch

from ..errors import SteerError
from .backbone import TextConditioning
from .stages import CONCEPT_PLACEHOLDER

PREVIEW_STEPS = 20
PREVIEW_CFG = 5.0


def check_preview_prompt(prompt: str) -> str:
    prompt = " ".join(str(prompt).split())
    if prompt.count(CONCEPT_PLACEHOLDER) != 1:
        raise SteerError(
            f"the preview prompt must hold {CONCEPT_PLACEHOLDER} once, where the subject goes (for example "
            f"'a photo of a {CONCEPT_PLACEHOLDER} dog on the beach'), got {prompt!r}"
        )
    return prompt


@torch.no_grad()
def preview_image(backbone, prompt: str, *, seed: int, size: int, steps: int = PREVIEW_STEPS, cfg: float = PREVIEW_CFG) -> torch.Tensor:
    """(3, size, size) in [0, 1]: `prompt` (with [V]) sampled from noise seeded by `seed`."""
    cond = backbone.encode_prompt(check_preview_prompt(prompt))
    return sample_images(backbone, TextConditioning(cond.embeddings, cond.pooled), [seed], size=size, steps=steps, cfg=cfg)[0]


@torch.no_grad()
def sample_images(backbone, conditions: TextConditioning, seeds, *, size: int, steps: int, cfg: float) -> torch.Tensor:
    """(B, 3, size, size) in [0, 1]: DDIM (eta 0) with CFG from encoded prompts (a batch of B),
    image i from noise seeded by seeds[i], so a batch gives the images one-by-one calls would."""
    count = conditions.embeddings.shape[0]
    both = TextConditioning.cat([backbone.encode_text("").expand(count), conditions]).float()
    alphas = backbone.schedule.alphas_cumprod.double().cpu()
    timesteps = torch.linspace(backbone.schedule.num_timesteps - 1, 0, steps).round().long()
    shape = backbone.latent_shape(size)
    x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float32) for s in seeds])
    x = x.to(backbone.device)
    for index, t in enumerate(timesteps):
        a = float(alphas[t])
        a_next = float(alphas[timesteps[index + 1]]) if index + 1 < steps else 1.0
        out_uncond, out_cond = backbone.predict_noise(torch.cat([x, x]), t.repeat(2 * count), both.embeddings, both.pooled).float().chunk(2)
        out = out_uncond + cfg * (out_cond - out_uncond)
        if backbone.schedule.prediction_type == "v_prediction":
            eps, x0 = a**0.5 * out + (1 - a) ** 0.5 * x, a**0.5 * x - (1 - a) ** 0.5 * out
        else:
            eps, x0 = out, (x - (1 - a) ** 0.5 * out) / a**0.5
        x = a_next**0.5 * x0 + (1 - a_next) ** 0.5 * eps
    return backbone.decode_latents(x).float().clamp(0, 1).cpu()
