"""guidance/memory.py: the backward-pass memory reserved before guided sampling."""

from steer.guidance.memory import MIB, backward_memory

SD15_VAE_DECODE_512 = 2178 * 64 * 64 * 64 * 2  # ComfyUI's estimate for the SD VAE, 64x64 latent, fp16


def test_the_sd15_calibration_gives_the_measured_extra_memory():
    through = backward_memory((1, 4, 64, 64), 2, 1.0, through_model=True, checkpointing=True, vae_decode_bytes=SD15_VAE_DECODE_512)
    assert abs(through / MIB - (1107 + 848)) < 2
    plain = backward_memory((1, 4, 64, 64), 2, 1.0, through_model=True, checkpointing=False, vae_decode_bytes=SD15_VAE_DECODE_512)
    assert abs(plain / MIB - (5588 + 1759)) < 2


def test_it_scales_with_area_batch_dtype_and_family_and_the_shortcut_skips_the_model():
    base = backward_memory((1, 16, 64, 64), 2, 1.0, through_model=True, checkpointing=True)
    assert backward_memory((1, 16, 128, 128), 2, 1.0, through_model=True, checkpointing=True) == 4 * base
    assert abs(backward_memory((2, 16, 64, 64), 4, 3.1, through_model=True, checkpointing=True) - 2 * 2 * 3.1 * base) < 8
    assert backward_memory((1, 16, 64, 64), 2, 3.1, through_model=False, checkpointing=True) == 0
