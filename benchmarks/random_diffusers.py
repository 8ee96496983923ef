"""Random-weight Stable-Diffusion-shaped models in diffusers + transformers, for the diffusers-backend
benchmark (personalize_step.py) and the personalization unit tests, which import them from here.
Nothing is downloaded: the CLIP BPE tokenizer is built from vocab/merges files written here.

    folder = write_tokenizer_files(Path(tmp) / "tokenizer")
    unet, text_encoder, tokenizer, vae, scheduler = random_sd_components(folder, unet_size="tiny", sample_size=8)

The UNet keeps SD's layout (cross-attention down/up blocks and mid block) at one of UNET_SIZES; the
text model is a two-layer CLIP TEXT_WIDTH wide, the VAE a two-level AutoencoderKL (it halves the
image side), the scheduler SD's DDPM schedule. Weights are seeded: same seed, same models.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("a", "photo", "of", "dog", "doll", "cat", "teddy", "bear", "backpack")
TEXT_WIDTH = 32
UNET_SIZES = {
    "tiny": dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_head_dim=2,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 2,
        up_block_types=("CrossAttnUpBlock2D",) * 2,
    ),
    "small": dict(
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        attention_head_dim=4,
        norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2,
    ),
    "sd15": dict(
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    ),
}


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable-character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, characters)))


def write_tokenizer_files(folder: Path) -> Path:
    """vocab.json + merges.txt: every byte, plus whole-word tokens for WORDS via left-to-right merges."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab = {symbol: index for index, symbol in enumerate(symbols + [s + "</w>" for s in symbols])}
    merges: list[str] = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merge = f"{pieces[0]} {pieces[1]}"
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def random_sd_components(
    tokenizer_folder: Path, *, unet_size: str = "tiny", sample_size: int = 8, prediction_type: str = "epsilon", seed: int = 0
):
    """(unet, text_encoder, tokenizer, vae, scheduler) with seeded random weights; `sample_size` is
    the latent side (the VAE's image side is twice it)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer(vocab=str(tokenizer_folder / "vocab.json"), merges=str(tokenizer_folder / "merges.txt"), model_max_length=77)
    torch.manual_seed(seed)
    # attention_head_dim: diffusers' SD configs mean "heads" here.
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, cross_attention_dim=TEXT_WIDTH, **UNET_SIZES[unet_size]
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=TEXT_WIDTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=2 * sample_size,
    )
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000, prediction_type=prediction_type
    )
    return unet, text_encoder, tokenizer, vae, scheduler
