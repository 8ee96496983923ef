"""Model-based losses inside a real ComfyUI.

- In a ComfyUI subprocess (clip_vision_probe.py): a stock CLIP_VISION file goes through the stock
  CLIPVisionLoader and Steer's style and image losses; gradients flow; the stock CLIPVisionEncode
  output is bit-identical before and after, so ComfyUI's behaviour is unchanged.
- Through the server (/object_info, /prompt): the nodes are listed with tooltips, and guided
  graphs with Hugging Face folders (models/steer) and a stock CLIP_VISION run to the end.
"""

import json

import numpy as np
import pytest
from comfy_server import ExecutionFailed
from fixture_models import cached_clip_vision_file, run_clip_vision_probe, stage_clip_vision, stage_tiny_clip
from graphs import sampling_graph
from unit.tiny_models import write_tiny_classifier

MODEL_NODES = ("SteerLoadGuidanceModel", "SteerCLIPTextLoss", "SteerCLIPImageLoss", "SteerStyleLoss", "SteerClassifierLoss")


@pytest.fixture(scope="session")
def clip_vision_file():
    """A ViT-L/14 CLIP vision file with random weights in ComfyUI's key layout, built once and cached (~600 MB)."""
    return cached_clip_vision_file()


@pytest.fixture(scope="module")
def steer_models(comfy):
    """Tiny Hugging Face folders in the server's models/steer."""
    root = comfy.models_dir / "steer"
    assert stage_tiny_clip(comfy.models_dir) == "tiny-clip"
    if not (root / "tiny-classifier" / "config.json").exists():
        write_tiny_classifier(root / "tiny-classifier")
    return root


@pytest.fixture(scope="module")
def stock_clip_vision(comfy, clip_vision_file):
    return stage_clip_vision(comfy.models_dir)


@pytest.fixture(scope="module")
def style_reference(comfy):
    """A textured PNG in the server's input folder, for LoadImage."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    pixels[::8] = (255, 200, 0)  # stripes: something with a style
    Image.fromarray(pixels).save(comfy.input_dir / "steer_style_reference.png")
    return "steer_style_reference.png"


def test_stock_clip_vision_gets_gradients_and_comfyui_behaviour_is_unchanged(clip_vision_file):
    completed = run_clip_vision_probe("probe", clip_vision_file, timeout=1500)
    line = next(line for line in completed.stdout.splitlines() if line.startswith("PROBE_REPORT "))
    report = json.loads(line.removeprefix("PROBE_REPORT "))
    assert report["steer_folder_registered"]
    assert report["model_class"] == "CLIPVisionModelProjection" and report["blocks"] == 24
    assert report["weights_are_inference_tensors"]  # the situation our adapter exists for
    for loss in ("style", "image"):
        assert report[loss]["grad_finite"] and report[loss]["grad_abs_sum"] > 0, report[loss]
    assert report["error_in_scope"] == "SteerError"
    assert report["inference_mode_still_on"]
    assert report["weight_functions_restored"] and report["our_weight_functions_left"] == 0
    assert report["clip_layer_forward_unchanged"]
    assert report["encode_finite"]
    # Same maths as the stock path: preprocessing differs only by clip_preprocess's 8-bit rounding,
    # and our out-of-place walk gives the stock forward's embeddings and block outputs.
    assert report["preprocess_max_difference"] <= report["preprocess_rounding_bound"] + 1e-5
    assert report["embed_max_difference"] < 1e-4 and report["block_tokens_max_difference"] < 1e-4, report
    assert report["encode_identical"] == {"last_hidden_state": True, "image_embeds": True, "penultimate_hidden_states": True}


def test_model_loss_nodes_are_listed_with_inputs_and_tooltips(comfy, steer_models):
    info = comfy.object_info()
    missing = [node for node in MODEL_NODES if node not in info]
    assert not missing, f"{missing} not registered: nodes/__init__.py must include nodes/model_loss_nodes.py"
    for node in MODEL_NODES:
        entry = info[node]
        assert entry["category"] == "Steer/losses" and entry["description"], node
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
    folders = info["SteerLoadGuidanceModel"]["input"]["required"]["model_folder"][0]
    assert {"tiny-clip", "tiny-classifier"} <= set(folders)
    assert not any(name.endswith((".json", ".safetensors")) for name in folders)  # folders, not files
    assert set(info["SteerStyleLoss"]["input"]["optional"]) == {"guidance_model", "clip_vision", "mask"}
    assert set(info["SteerCLIPImageLoss"]["input"]["optional"]) == {"guidance_model", "clip_vision", "mask"}
    assert info["SteerCLIPTextLoss"]["input"]["required"]["distance"][0] == ["spherical", "cosine"]
    assert info["SteerLoadGuidanceModel"]["output"] == ["STEER_GUIDANCE_MODEL"]


def _guided_graph(loss_factory, preset="paper", steps=3, id_prefix="", seed=3):
    """The shared sampling graph with SteerGuidedSampler(loss) as its sampler."""

    def steer(b, ckpt):
        loss = loss_factory(b)
        return b.node("SteerGuidedSampler", node_id=id_prefix + "steer", vae=ckpt.out(2), loss=loss.out(0), preset=preset, strength=1.0)

    return sampling_graph(steer, seed=seed, steps=steps, prefix="steer_model_loss", id_prefix=id_prefix)[0]


def _hf_losses(style_reference, clip_precision):
    def losses(b):
        clip = b.node("SteerLoadGuidanceModel", node_id="clip_model", model_folder="tiny-clip", precision=clip_precision)
        classifier = b.node("SteerLoadGuidanceModel", node_id="cls_model", model_folder="tiny-classifier", precision="float32")
        reference = b.node("LoadImage", node_id="reference", image=style_reference)
        text = b.node(
            "SteerCLIPTextLoss",
            node_id="text",
            guidance_model=clip.out(0),
            prompt="a red cat",
            negative_prompt="a dog",
            negative_weight=0.5,
            distance="spherical",
            fit="stretch",
        )
        label = b.node(
            "SteerClassifierLoss",
            node_id="label",
            guidance_model=classifier.out(0),
            label="golden hour",
            objective="cross_entropy",
            fit="stretch",
        )
        image = b.node(
            "SteerCLIPImageLoss",
            node_id="image",
            reference=reference.out(0),
            distance="cosine",
            fit="center_crop",
            guidance_model=clip.out(0),
        )
        style = b.node("SteerStyleLoss", node_id="style", reference=reference.out(0), block=1, fit="stretch", guidance_model=clip.out(0))
        return b.node(
            "SteerCombineLosses",
            node_id="combine",
            loss_1=text.out(0),
            weight_1=5.0,
            loss_2=label.out(0),
            weight_2=1.0,
            loss_3=image.out(0),
            weight_3=5.0,
            loss_4=style.out(0),
            weight_4=2.0,
        )

    return losses


def test_guided_graph_with_clip_text_classifier_image_and_style_losses_finishes(comfy, steer_models, style_reference):
    result = comfy.run(_guided_graph(_hf_losses(style_reference, "auto"), preset="paper").prompt(), timeout=900)
    assert len(comfy.images(result, "save")) == 1
    # A new precision re-runs the loader node; the folder itself must come from the process-wide cache.
    comfy.run(_guided_graph(_hf_losses(style_reference, "float32"), preset="dps", id_prefix="again_", seed=4).prompt(), timeout=900)
    assert comfy.log_text().count("tiny-clip (clip)") == 1, comfy.log_tail()


def test_guided_graph_with_stock_clip_vision_style_and_image_losses_finishes(comfy, stock_clip_vision, style_reference):
    def losses(b):
        clip_vision = b.node("CLIPVisionLoader", node_id="clip_vision", clip_name=stock_clip_vision)
        reference = b.node("LoadImage", node_id="reference", image=style_reference)
        style = b.node(
            "SteerStyleLoss", node_id="cv_style", reference=reference.out(0), block=2, fit="stretch", clip_vision=clip_vision.out(0)
        )
        image = b.node(
            "SteerCLIPImageLoss",
            node_id="cv_image",
            reference=reference.out(0),
            distance="spherical",
            fit="stretch",
            clip_vision=clip_vision.out(0),
        )
        return b.node("SteerCombineLosses", node_id="cv_combine", loss_1=style.out(0), weight_1=1.0, loss_2=image.out(0), weight_2=5.0)

    # dps: every step guided once, no augmentation or time travel, to keep ViT-L on the CPU affordable.
    result = comfy.run(_guided_graph(losses, preset="dps", steps=2, id_prefix="cv_").prompt(), timeout=1500)
    assert len(comfy.images(result, "cv_save")) == 1


def test_bad_model_inputs_are_clear_errors(comfy, steer_models, style_reference):
    def no_model(b):
        reference = b.node("LoadImage", node_id="reference", image=style_reference)
        return b.node("SteerStyleLoss", node_id="bad_style", reference=reference.out(0), block=2, fit="stretch")

    with pytest.raises(ExecutionFailed) as failure:
        comfy.run(_guided_graph(no_model, id_prefix="bad1_").prompt(), timeout=300)
    assert "no model connected" in failure.value.exception_message

    def wrong_label(b):
        classifier = b.node("SteerLoadGuidanceModel", node_id="cls_model", model_folder="tiny-classifier", precision="float32")
        return b.node(
            "SteerClassifierLoss",
            node_id="bad_label",
            guidance_model=classifier.out(0),
            label="horse",
            objective="cross_entropy",
            fit="stretch",
        )

    with pytest.raises(ExecutionFailed) as failure:
        comfy.run(_guided_graph(wrong_label, id_prefix="bad2_").prompt(), timeout=300)
    assert "0: cat, 1: dog, 2: Golden Hour" in failure.value.exception_message
