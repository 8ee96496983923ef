"""What the AttnDreamBooth integration tests share (SD1.x and SDXL): the saved image of a sampling graph, and the check that
stock nodes apply a trained concept."""

import numpy as np

TIMEOUT = 900


def saved_image(comfy, prompt: dict) -> np.ndarray:
    """The image the prompt's SaveImage node "save" wrote, as int16 RGB."""
    (image,) = comfy.images(comfy.run(prompt, timeout=TIMEOUT), "save")
    return np.asarray(image.convert("RGB"), dtype=np.int16)


LOAD_WARNINGS = ("lora key not loaded", "NOT LOADED", "does not exist, ignoring", "shape mismatch")


def assert_stock_nodes_apply_the_concept(comfy, image_of, concept: str) -> None:
    """`image_of(prompt, lora)` gives the stock txt2img image (LoraLoaderModelOnly with `lora` when not None) at one seed.
    LoraLoaderModelOnly and `embedding:<concept>` load without a warning, and the token, the UNet file and both each
    change the image."""
    log_before = len(comfy.log_text())
    base = image_of("a photo of a dog", None)
    token_only = image_of(f"a photo of embedding:{concept} dog", None)
    unet_only = image_of("a photo of a dog", f"{concept}.safetensors")
    both = image_of(f"a photo of embedding:{concept} dog", f"{concept}.safetensors")
    log = comfy.log_text()[log_before:]
    assert not [warning for warning in LOAD_WARNINGS if warning in log], log
    assert np.abs(token_only - base).max() > 0, "the learned token changed nothing"
    assert np.abs(unet_only - base).max() > 0, "the UNet file changed nothing"
    assert np.abs(both - base).max() > 0 and np.abs(both - unet_only).max() > 0
