"""Region masks and the reward loss inside a real ComfyUI: stock mask nodes, /prompt, images read back."""

import numpy as np
import pytest
import torch
from fixture_models import stage_reward_head, stage_tiny_clip
from graphs import sampling_graph
from safetensors.torch import load_file

LOSS_NODES = ("SteerColorLoss", "SteerEdgeLoss", "SteerCLIPTextLoss", "SteerCLIPImageLoss", "SteerStyleLoss", "SteerClassifierLoss")
SAMPLER_NODES = ("SteerGuidedSampler", "SteerGuidedSamplerAdvanced")
HEAD_NAME = "heads/toy_reward.safetensors"
SIDE = 64  # the shared sampling graph makes 64x64 images


@pytest.fixture(scope="module")
def reward_setup(comfy):
    from steer.guidance.hf_models import load_guidance_model
    from steer.guidance.losses.clip import HFCLIPEncoder
    from steer.guidance.losses.reward import RewardHead

    encoder = HFCLIPEncoder(load_guidance_model(comfy.models_dir / "steer" / stage_tiny_clip(comfy.models_dir)))
    stage_reward_head(comfy.models_dir, HEAD_NAME)
    return encoder, RewardHead(load_file(str(comfy.models_dir / "steer" / HEAD_NAME)))


def left_half_mask(b, node_id="mask"):
    """Stock nodes only: a black 64x64 mask with a white 32x64 left half pasted on it."""
    black = b.node("SolidMask", node_id=f"{node_id}_black", value=0.0, width=SIDE, height=SIDE)
    white = b.node("SolidMask", node_id=f"{node_id}_white", value=1.0, width=SIDE // 2, height=SIDE)
    return b.node("MaskComposite", node_id=node_id, destination=black.out(0), source=white.out(0), x=0, y=0, operation="add")


def _pixels(comfy, result, node_id):
    (image,) = comfy.images(result, node_id)
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _redness(pixels):
    return float((pixels[..., 0] - (pixels[..., 1] + pixels[..., 2]) / 2).mean())


def _blueness(pixels):
    return float((pixels[..., 2] - (pixels[..., 0] + pixels[..., 1]) / 2).mean())


def _run(comfy, factory, tag, steps=6):
    b, _, _ = sampling_graph(factory, steps=steps, prefix=tag, id_prefix=f"{tag}_")
    return _pixels(comfy, comfy.run(b.prompt(), timeout=900), f"{tag}_save")


def _steer(loss_factory, masked_sampler=False, preset="mpgd", strength=1.0):
    def factory(b, ckpt):
        inputs = {"vae": ckpt.out(2), "loss": loss_factory(b).out(0), "preset": preset, "strength": strength}
        if masked_sampler:
            inputs["mask"] = left_half_mask(b, "sampler_mask").out(0)
        return b.node("SteerGuidedSampler", node_id="steer", **inputs)

    return factory


def _red(masked):
    def loss(b):
        extra = {"mask": left_half_mask(b).out(0)} if masked else {}
        return b.node("SteerColorLoss", node_id="red", color="#ff0000", match="pixels", **extra)

    return loss


@pytest.fixture(scope="module")
def unguided(comfy):
    return _run(comfy, lambda b, ckpt: b.node("KSamplerSelect", node_id="euler", sampler_name="euler"), "plain")


def test_every_loss_and_sampler_takes_an_optional_mask_last_and_the_reward_node_lists_heads(comfy, reward_setup):
    info = comfy.object_info()
    for node in LOSS_NODES + SAMPLER_NODES + ("SteerRewardLoss",):
        optional = info[node]["input"]["optional"]
        assert optional["mask"][0] == "MASK" and optional["mask"][1]["tooltip"], node
        assert info[node]["input_order"]["optional"][-1] == "mask", node  # saved workflows keep their widget order
    reward = info["SteerRewardLoss"]
    assert reward["category"] == "Steer/losses" and reward["description"]
    heads = reward["input"]["required"]["head"][0]
    assert HEAD_NAME in heads
    assert not any(name.endswith("model.safetensors") for name in heads)  # files of model folders are not heads


def test_a_masked_colour_loss_with_a_masked_sampler_reddens_the_region_and_spares_the_rest(comfy, unguided):
    masked = _run(comfy, _steer(_red(masked=True), masked_sampler=True), "masked")
    everywhere = _run(comfy, _steer(_red(masked=False)), "everywhere")
    half = SIDE // 2
    inside = _redness(masked[:, :half]) - _redness(unguided[:, :half])
    outside = np.abs(masked[:, half:] - unguided[:, half:]).mean()
    outside_unmasked = np.abs(everywhere[:, half:] - unguided[:, half:]).mean()
    print(f"inside redness +{inside:.3f}; outside change {outside:.4f} masked, {outside_unmasked:.4f} unmasked")
    assert inside > 0.05
    assert outside < 0.5 * outside_unmasked


def test_combined_masked_losses_give_each_region_its_own_colour(comfy, unguided):
    def combined(b):
        mask = left_half_mask(b)
        right = b.node("InvertMask", node_id="right", mask=mask.out(0))
        red = b.node("SteerColorLoss", node_id="red", color="#ff0000", match="pixels", mask=mask.out(0))
        blue = b.node("SteerColorLoss", node_id="blue", color="#0000ff", match="pixels", mask=right.out(0))
        return b.node("SteerCombineLosses", node_id="both", loss_1=red.out(0), loss_2=blue.out(0))

    guided = _run(comfy, _steer(combined), "two_regions")
    half = SIDE // 2
    left, right = guided[:, :half], guided[:, half:]
    base_left, base_right = unguided[:, :half], unguided[:, half:]
    assert _redness(left) - _redness(base_left) > 0.05 and _blueness(right) - _blueness(base_right) > 0.05
    assert _redness(left) - _redness(base_left) > _redness(right) - _redness(base_right) + 0.05
    assert _blueness(right) - _blueness(base_right) > _blueness(left) - _blueness(base_left) + 0.05


def test_the_reward_loss_raises_the_heads_score(comfy, reward_setup, unguided):
    encoder, head = reward_setup

    def reward(b):
        clip = b.node("SteerLoadGuidanceModel", node_id="clip", model_folder="tiny-clip", precision="float32")
        return b.node("SteerRewardLoss", node_id="reward", head=HEAD_NAME, activation="none", fit="stretch", guidance_model=clip.out(0))

    guided = _run(comfy, _steer(reward, preset="paper"), "reward")

    def score(pixels):
        images = torch.from_numpy(pixels).float().permute(2, 0, 1)[None]
        with torch.no_grad():
            return float(head(torch.nn.functional.normalize(encoder.embed(images), dim=-1)))

    print(f"reward score {score(unguided):.4f} unguided -> {score(guided):.4f} guided")
    assert score(guided) > score(unguided)
