"""The world's text-to-image model: Stable Diffusion's architecture in miniature, in diffusers.

    vae/           AutoencoderKL, 32x32 RGB <-> 8x8x4 latents (scaling_factor in its config, as SD's)
    unet/          UNet2DConditionModel, cross-attention at 8x8 and 4x4 (and the 2x2 mid block)
    text_encoder/  CLIPTextModel over the world's vocabulary
    tokenizer/     CLIPTokenizer (vocab.json + merges.txt, trained on the captions)
    scheduler/     DDPMScheduler, SD's scaled-linear betas, epsilon prediction
    tiny_decoder/  a TAESD-like decoder distilled from the VAE's, for cheap loss decoding

The folder is a diffusers pipeline folder (model_index.json), loaded with safetensors only.
Conventions are the digits model's: sigma space x = x0 + sigma * n over *scaled* latents,
images (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SteerError
from ..safe_files import read_safetensors
from .scene import IMAGE_SIZE

MODEL_DIR = Path(__file__).resolve().parent / "weights"
LATENT_SIZE = IMAGE_SIZE // 4
LATENT_CHANNELS = 4
TEXT_DIM = 64
MAX_TOKENS = 32
NUM_TRAIN_TIMESTEPS = 1000

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    latent_channels=LATENT_CHANNELS,
    norm_num_groups=16,
    sample_size=IMAGE_SIZE,
)

UNET_CONFIG = dict(
    sample_size=LATENT_SIZE,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    layers_per_block=1,
    block_out_channels=(48, 96, 96),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_DIM,
    attention_head_dim=8,
    norm_num_groups=16,
)

TEXT_CONFIG = dict(
    hidden_size=TEXT_DIM,
    intermediate_size=4 * TEXT_DIM,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    prediction_type="epsilon",
    clip_sample=False,
)


class TinyDecoder(nn.Module):
    """TAESD's decoder shape at this scale: conv blocks with residuals and nearest upsampling,
    latents (scaled) -> images in [0, 1]. No clamp, so gradients survive."""

    def __init__(self, channels: int = 48):
        super().__init__()

        def block():
            return _Residual(
                nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))
            )

        self.body = nn.Sequential(
            nn.Conv2d(LATENT_CHANNELS, channels, 3, padding=1),
            nn.ReLU(),
            block(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            block(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            block(),
            nn.Conv2d(channels, 3, 3, padding=1),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.body(latents) * 0.5 + 0.5


class _Residual(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.relu(x + self.inner(x))


def build_tokenizer(folder: Path):
    """Train a word-level BPE over the world's vocabulary and save it as a CLIPTokenizer folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    from .scene import vocabulary

    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789<>_-,.'!?"
    corpus = [" ".join(vocabulary())] * 50 + [" ".join(letters)]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        end_of_word_suffix="</w>",
        initial_alphabet=list(letters),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    bpe.model.save(str(folder))
    merges = (folder / "merges.txt").read_text().splitlines()
    if not merges or not merges[0].startswith("#version"):
        (folder / "merges.txt").write_text("\n".join(["#version: 0.2"] + merges) + "\n")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS, pad_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """(B, MAX_TOKENS, TEXT_DIM) last hidden states, padded to the full length as SD does."""
    ids = tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device)).last_hidden_state


def alphas_cumprod(scheduler_config: dict = SCHEDULER_CONFIG) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**scheduler_config).alphas_cumprod.float().clone()


def sigmas_for_steps(n: int, alphas: torch.Tensor | None = None) -> torch.Tensor:
    """n sampling sigmas with diffusers' "trailing" spacing (starting at sigma_max), then 0."""
    alphas = alphas_cumprod() if alphas is None else alphas
    total = len(alphas)
    if not 1 <= int(n) <= total:
        raise SteerError(f"steps must be between 1 and {total}, got {n}")
    timesteps = np.round(np.arange(total, 0, -total / int(n))).astype(np.int64) - 1
    sigmas = ((1.0 - alphas) / alphas).sqrt()[torch.from_numpy(timesteps)]
    return torch.cat([sigmas, sigmas.new_zeros(1)])


class WorldDenoiser:
    """denoise(x, sigma) -> x0 for a batch of prompts with classifier-free guidance.

    `cond` and `uncond` are (B, T, D) text states. `cfg_gradient` = "positive" lets gradients flow
    through the prompt's branch only (the unconditional one is computed without grad), as Steer's
    ComfyUI adapter does by default; "combined" differentiates both.
    """

    def __init__(
        self,
        unet: nn.Module,
        alphas: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        cfg: float = 4.0,
        cfg_gradient: str = "positive",
    ):
        self.unet, self.cond, self.uncond, self.cfg, self.cfg_gradient = unet, cond, uncond, float(cfg), cfg_gradient
        sigmas = ((1.0 - alphas) / alphas).sqrt()
        self.log_sigmas = sigmas.log()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional training timestep: linear in log-sigma between the training sigmas."""
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.detach().float().clamp(min=float(log_sigmas[0].exp())).log()
        low = (log_sigma[None, :] >= log_sigmas[:, None]).sum(0).sub(1).clamp(0, len(log_sigmas) - 2)
        w = ((log_sigma - log_sigmas[low]) / (log_sigmas[low + 1] - log_sigmas[low])).clamp(0.0, 1.0)
        return low.float() + w

    def _eps(self, x_vp: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.unet(x_vp, t, encoder_hidden_states=text).sample

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(x.shape[0])
        s = sigma.view(-1, 1, 1, 1)
        x_vp = x / (s * s + 1.0).sqrt()
        t = self.timestep(sigma)
        if self.cfg == 1.0:
            eps = self._eps(x_vp, t, self.cond)
        elif self.cfg_gradient == "positive" and torch.is_grad_enabled() and x.requires_grad:
            # As ComfyUI's guider does it: CFG combines x̂0 predictions, and the unconditional one is
            # computed from a detached x, so the gradient is cfg × the prompt branch's ∂x̂0/∂x.
            # (Combining ε with a detached ε_u instead would give I − cfg·σ·∂ε_c/∂x, which flips sign at high noise.)
            x0_c = x - s * self._eps(x_vp, t, self.cond)
            with torch.no_grad():
                x0_u = x - s * self._eps(x_vp, t, self.uncond)
            return x0_u + self.cfg * (x0_c - x0_u)
        else:
            both = self._eps(torch.cat([x_vp, x_vp]), torch.cat([t, t]), torch.cat([self.uncond, self.cond]))
            eps_u, eps_c = both.chunk(2)
            eps = eps_u + self.cfg * (eps_c - eps_u)
        return x - s * eps


@dataclass
class WorldModel:
    """The committed world model, on CPU, frozen."""

    vae: nn.Module
    unet: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    tiny_decoder: nn.Module
    alphas: torch.Tensor
    scaling_factor: float
    folder: Path

    def text(self, prompts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return encode_prompts(self.tokenizer, self.text_encoder, prompts)

    def denoiser(self, prompts: list[str], cfg: float = 4.0, cfg_gradient: str = "positive") -> WorldDenoiser:
        return WorldDenoiser(self.unet, self.alphas, self.text(prompts), self.text([""] * len(prompts)), cfg, cfg_gradient)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images (B, 3, 32, 32) in about [0, 1], differentiable, unclamped."""
        return self.vae.decode(latents / self.scaling_factor).sample * 0.5 + 0.5

    def decode_tiny(self, latents: torch.Tensor) -> torch.Tensor:
        return self.tiny_decoder(latents)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> scaled latents (posterior mean)."""
        return self.vae.encode(images * 2.0 - 1.0).latent_dist.mean * self.scaling_factor


def load_world(folder: str | Path | None = None) -> WorldModel:
    """Load the world model folder (default: the committed world/weights), safetensors only."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder) if folder is not None else MODEL_DIR
    needed = [
        "model_index.json",
        "vae/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tiny_decoder/tiny_decoder.safetensors",
    ]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise SteerError(
            f"the world model folder {folder} lacks {', '.join(missing)}: reinstall the package or rebuild it with `python -m "
            f"steer.world.train --out {folder}`"
        )
    vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    tiny = TinyDecoder()
    tiny.load_state_dict(read_safetensors(folder / "tiny_decoder" / "tiny_decoder.safetensors")[0])
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    alphas = alphas_cumprod({k: scheduler[k] for k in SCHEDULER_CONFIG})
    frozen = [m.eval().requires_grad_(False) for m in (vae, unet, text_encoder, tiny)]
    return WorldModel(frozen[0], frozen[1], frozen[2], tokenizer, frozen[3], alphas, float(vae.config.scaling_factor), folder)
