"""How much memory a guided step's backward pass needs beyond an unguided step, for ComfyUI's model
management to free before sampling (load_models_gpu's memory_required).

Calibrated on the one family measured on a GPU-shaped run, SD1.5 at 512 px in fp16, batch 1 (the
guidance-cost benchmark, benchmarks/results/guidance_cost.md): through the model, +1107 MiB with
gradient checkpointing and +5588 MiB without; the VAE decoder's backward, +848 MiB and +1759 MiB.
The model part scales with the latent area, the activation dtype and ComfyUI's own per-family
memory_usage_factor (SD1.5 1.0, SDXL 0.8, SD3 1.2, Flux 3.1), as ComfyUI's estimate of a forward
does; the VAE part is a multiple of ComfyUI's own estimate of a decode. Other families are computed
this way, not measured.
"""

from __future__ import annotations

import math

MIB = 1024 * 1024
# MiB per latent cell per byte of activation dtype, at memory_usage_factor 1 (SD1.5: 64·64 cells, fp16).
MODEL_BACKWARD_MIB_PER_CELL_BYTE = {True: 1107 / (64 * 64 * 2), False: 5588 / (64 * 64 * 2)}
# Multiples of ComfyUI's VAE decode estimate (2178·h·w·64 × dtype bytes for the SD VAE: 1089 MiB for 64x64 in fp16).
_SD_VAE_DECODE_512_MIB = 2178 * 64 * 64 * 64 * 2 / MIB
VAE_BACKWARD_OF_DECODE = {True: 848 / _SD_VAE_DECODE_512_MIB, False: 1759 / _SD_VAE_DECODE_512_MIB}


def backward_memory(
    latent_shape: tuple[int, ...],
    dtype_size: int,
    memory_usage_factor: float,
    through_model: bool,
    checkpointing: bool,
    vae_decode_bytes: float = 0.0,
) -> int:
    """Bytes to reserve for one guided step's backward pass. `latent_shape` is (B, C, H, W) of the
    branch that is differentiated; `vae_decode_bytes` is ComfyUI's estimate of decoding it (0: TAESD)."""
    cells = latent_shape[0] * math.prod(latent_shape[2:])
    model = MODEL_BACKWARD_MIB_PER_CELL_BYTE[checkpointing] * cells * dtype_size * memory_usage_factor * MIB if through_model else 0.0
    vae = VAE_BACKWARD_OF_DECODE[checkpointing] * vae_decode_bytes
    return int(model + vae)
