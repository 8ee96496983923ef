"""AttnDreamBooth on SDXL through a real ComfyUI server (/prompt): training writes an embedding with one
vector for CLIP-L and one for CLIP-G and a LoRA of the SDXL UNet; the stock LoraLoaderModelOnly and
`embedding:<name>` apply them without warnings and change the image at the same seed; the Train node's
outputs and Steer AttnDreamBooth Load give the stock nodes' image.

The model is the test pack's tiny SDXL (tests/integration/family_pack: ComfyUI's own SDXL model class
and SDXLClipModel layout at tiny widths, steer.benchmarks.comfy_tiny_sdxl); the backends' agreement on
SDXL is tested in test_attndreambooth.py (the "sdxl" parity variant).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from comfy_server import ExecutionFailed, PromptBuilder
from concept_checks import LOAD_WARNINGS, assert_stock_nodes_apply_the_concept, saved_image
from graphs import concept_sample_graph, one_step_training_inputs, tiny_training_plan, txt2img

from steer.benchmarks.random_diffusers import SDXL_G_WIDTH, TEXT_WIDTH

CONCEPT = "steer_test_sdxl_dog"
TIMEOUT = 900
PLAN = tiny_training_plan()


def photos(b: PromptBuilder):
    """Three flat photos of different colours, with stock nodes."""
    colours = [0x8844AA, 0x44AA88, 0xAA8844]
    images = [b.node("EmptyImage", node_id=f"photo_{i}", width=64, height=64, batch_size=1, color=c) for i, c in enumerate(colours)]
    first = b.node("ImageBatch", node_id="photos_ab", image1=images[0].out(0), image2=images[1].out(0))
    return b.node("ImageBatch", node_id="photos", image1=first.out(0), image2=images[2].out(0))


def train_graph(name=CONCEPT, **changes) -> dict:
    b = PromptBuilder()
    sdxl = b.node("SteerTestSDXLTrainable", node_id="sdxl")
    train = b.node(
        "SteerAttnDreamBoothTrain",
        node_id="train",
        model=sdxl.out(0),
        clip=sdxl.out(1),
        vae=sdxl.out(2),
        images=photos(b).out(0),
        **one_step_training_inputs(concept_name=name, **{**PLAN, **changes}),
    )
    b.node("PreviewImage", node_id="plot", images=train.out(3))
    # Sample straight from the node's outputs: its MODEL, its CLIP and its trigger phrase as the prompt.
    txt2img(b, train.out(0), train.out(1), sdxl.out(2), train.out(2), seed=5, prefix="t_")
    return b.prompt()


def sample_graph(prompt: str, lora: str | None = None, concept: str | None = None, seed: int = 11) -> dict:
    """The stock SDXL txt2img graph on the tiny SDXL, optionally with LoraLoaderModelOnly or Steer AttnDreamBooth Load."""
    return concept_sample_graph(lambda b: b.node("SteerTestSDXLTrainable", node_id="sdxl"), prompt, lora, concept, seed)


@pytest.fixture(scope="module")
def trained(comfy):
    log_before = len(comfy.log_text())
    result = comfy.run(train_graph(), timeout=TIMEOUT)
    return {"result": result, "log": comfy.log_text()[log_before:]}


def test_sdxl_training_writes_both_vectors_and_an_sdxl_unet_lora(comfy, trained):
    from safetensors.torch import load_file

    assert len(comfy.images(trained["result"], "plot")) == 1
    assert not [warning for warning in LOAD_WARNINGS if warning in trained["log"]], trained["log"]
    embedding = load_file(str(comfy.models_dir / "embeddings" / f"{CONCEPT}.safetensors"))
    # One vector per text encoder, each at its encoder's width, under the keys ComfyUI's SDXL tokenizers read.
    assert {key: tuple(value.shape) for key, value in embedding.items()} == {"clip_l": (1, TEXT_WIDTH), "clip_g": (1, SDXL_G_WIDTH)}
    unet = load_file(str(comfy.models_dir / "loras" / f"{CONCEPT}.safetensors"))
    assert any(key.endswith("transformer_blocks.1.attn2.to_k.lora_up.weight") for key in unet)  # SDXL's deeper transformers
    assert any(key.startswith("diffusion_model.label_emb.0.0.") for key in unet)  # the pooled/size embedding trained in stage 3
    metadata = json.loads((comfy.models_dir / "loras" / f"{CONCEPT}.json").read_text())
    assert metadata["architecture"] == "SDXL" and metadata["base_model"].startswith("comfyui-SDXL-")
    assert metadata["embedding_keys"] == ["clip_g", "clip_l"] and metadata["steps"] == 4
    assert metadata["plan"]["resolution"] == 64  # a custom plan keeps its resolution on SDXL


def test_stock_loaders_apply_the_sdxl_concept_without_warnings_and_change_thesaved_image(comfy, trained):
    assert_stock_nodes_apply_the_concept(comfy, lambda prompt, lora: saved_image(comfy, sample_graph(prompt, lora=lora)), CONCEPT)


def test_the_train_and_load_nodes_give_the_stock_nodessaved_image(comfy, trained):
    stock = saved_image(comfy, sample_graph(f"embedding:{CONCEPT} dog", lora=f"{CONCEPT}.safetensors", seed=5))
    assert np.array_equal(saved_image(comfy, sample_graph("unused", concept=CONCEPT, seed=5)), stock)
    (from_train,) = comfy.images(trained["result"], "t_save")
    assert np.array_equal(np.asarray(from_train.convert("RGB"), dtype=np.int16), stock)


def test_an_sdxl_model_with_an_sd1_clip_is_refused_before_training(comfy):
    from comfy_server import CHECKPOINT_NAME

    b = PromptBuilder()
    sdxl = b.node("SteerTestSDXLTrainable", node_id="sdxl")
    sd15 = b.node("CheckpointLoaderSimple", node_id="sd15", ckpt_name=CHECKPOINT_NAME)
    train = b.node(
        "SteerAttnDreamBoothTrain",
        node_id="train",
        model=sdxl.out(0),
        clip=sd15.out(1),
        vae=sdxl.out(2),
        images=photos(b).out(0),
        **one_step_training_inputs(concept_name="refused_sdxl_sd1_clip"),
    )
    b.node("PreviewImage", node_id="plot", images=train.out(3))
    with pytest.raises(ExecutionFailed) as failure:
        comfy.run(b.prompt(), timeout=TIMEOUT)
    assert failure.value.exception_type.endswith("SteerError")
    assert "not SDXL's pair of text encoders" in failure.value.exception_message
    assert not (comfy.models_dir / "loras" / "refused_sdxl_sd1_clip.safetensors").exists()
