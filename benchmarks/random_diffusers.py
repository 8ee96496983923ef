"""Random-weight Stable-Diffusion-shaped models in diffusers + transformers, for the diffusers-backend
benchmark (personalize_step.py) and the personalization unit tests, which import them from here.
Nothing is downloaded: the CLIP BPE tokenizer is built from vocab/merges files written here.

    folder = write_tokenizer_files(Path(tmp) / "tokenizer")
    unet, text_encoder, tokenizer, vae, scheduler = random_sd_components(folder, unet_size="tiny", sample_size=8)

The UNet keeps SD's layout (cross-attention down/up blocks and mid block) at one of UNET_SIZES; the
text model is a two-layer CLIP TEXT_WIDTH wide, the VAE a two-level AutoencoderKL (it halves the
image side), the scheduler SD's DDPM schedule. Weights are seeded: same seed, same models.

`random_sdxl_components` is the SDXL layout in the same spirit: a first level without attention,
two transformer blocks at the second, the "text_time" added conditioning, CLIP-L TEXT_WIDTH wide
and a projected CLIP-G SDXL_G_WIDTH wide.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("a", "photo", "of", "dog", "doll", "cat", "teddy", "bear", "backpack")
TEXT_WIDTH = 32
SDXL_G_WIDTH = 48
SDXL_TIME_EMBED = 256  # per size number, as ComfyUI's SDXL (model_base.SDXL: Timestep(256))
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
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = _tokenizer(tokenizer_folder)
    torch.manual_seed(seed)
    # attention_head_dim: diffusers' SD configs mean "heads" here.
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, cross_attention_dim=TEXT_WIDTH, **UNET_SIZES[unet_size]
    )
    text_encoder = CLIPTextModel(_text_config(tokenizer, TEXT_WIDTH))
    return unet, text_encoder, tokenizer, _vae(sample_size), _scheduler(prediction_type)


def random_sdxl_components(tokenizer_folder: Path, *, sample_size: int = 8, seed: int = 0) -> dict:
    """DiffusersBackbone's keyword arguments for a seeded random SDXL-shaped model: unet, text_encoder
    (CLIP-L), tokenizer, vae, scheduler, text_encoder_2 (CLIP-G with its projection), tokenizer_2."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = _tokenizer(tokenizer_folder)
    tokenizer_2 = _tokenizer(tokenizer_folder, pad_token="!")  # SDXL's second tokenizer pads with "!", not the end token
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        # ComfyUI's UNet has 32 norm groups and SDXL 64 channels per head: the same weights build it too
        # (benchmarks/comfy_tiny_sdxl.py), with two heads at the second level.
        block_out_channels=(32, 128),
        layers_per_block=1,
        norm_num_groups=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(1, 2),  # heads, in diffusers' naming
        use_linear_projection=True,
        cross_attention_dim=TEXT_WIDTH + SDXL_G_WIDTH,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED,
        projection_class_embeddings_input_dim=SDXL_G_WIDTH + 6 * SDXL_TIME_EMBED,
    )
    return {
        "unet": unet,
        # Three layers: SDXL reads the penultimate one (ComfyUI requires it to be a middle layer).
        "text_encoder": CLIPTextModel(_text_config(tokenizer, TEXT_WIDTH, layers=3)),
        "tokenizer": tokenizer,
        "vae": _vae(sample_size),
        "scheduler": _scheduler("epsilon"),
        "text_encoder_2": CLIPTextModelWithProjection(_text_config(tokenizer_2, SDXL_G_WIDTH, layers=3)),
        "tokenizer_2": tokenizer_2,
    }


def _tokenizer(folder: Path, **options):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77, **options)


def _text_config(tokenizer, width: int, layers: int = 2):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _vae(sample_size: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
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


def _scheduler(prediction_type: str):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000, prediction_type=prediction_type
    )
