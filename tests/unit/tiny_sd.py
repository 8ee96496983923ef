"""A tiny Stable-Diffusion-shaped model for personalization tests: diffusers UNet (SD layout:
cross-attention down/up blocks, a cross-attention mid block), transformers CLIP text model,
a CLIP BPE tokenizer built from vocab/merges files written here, a one-level AutoencoderKL
and a DDPM scheduler. Random seeded weights; nothing is downloaded."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

WORDS = ("a", "photo", "of", "dog", "doll", "cat", "teddy", "bear", "backpack")
RESOLUTION = 16  # pixels; the VAE halves it, so latents are 8×8 and the UNet works at 8×8 and 4×4
TEXT_WIDTH = 32


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


def tiny_components(tokenizer_folder: Path, prediction_type: str = "epsilon", seed: int = 0):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer(vocab=str(tokenizer_folder / "vocab.json"), merges=str(tokenizer_folder / "merges.txt"), model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=2,  # diffusers' SD configs mean "heads" here
        norm_num_groups=8,
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
        sample_size=RESOLUTION,
    )
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000, prediction_type=prediction_type)
    return unet, text_encoder, tokenizer, vae, scheduler


def tiny_backbone(tokenizer_folder: Path, prediction_type: str = "epsilon", seed: int = 0):
    from steer.personalize.diffusers_backbone import DiffusersBackbone

    return DiffusersBackbone(*tiny_components(tokenizer_folder, prediction_type, seed), identity=f"tiny-sd-{seed}")


def tiny_photos(count: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """Smooth random RGB photos of different sizes, (3, H, W) in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(20, 24), (30, 18), (16, 16), (40, 28), (17, 33)]
    photos = []
    for index in range(count):
        height, width = sizes[index % len(sizes)]
        coarse = torch.rand(1, 3, 4, 4, generator=generator)
        photos.append(torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0])
    return photos


@contextmanager
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and OpenMP threads spin-wait badly on a busy
    2-core machine (measured: 0.1 s vs 2 s per training step). Restores the thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
