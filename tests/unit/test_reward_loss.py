"""Reward heads read from safetensors, and the reward loss that maximises them."""

import dataclasses

import pytest
import torch
from safetensors.torch import save_file
from unit.toy import GaussianDenoiser, karras_like_sigmas

from steer.errors import SteerError
from steer.guidance.augment import AugmentConfig
from steer.guidance.config import preset
from steer.guidance.losses.clip import HFCLIPEncoder
from steer.guidance.losses.masked import MaskedLoss
from steer.guidance.losses.reward import RewardHead, RewardLoss, load_reward_head
from steer.guidance.region import Region
from steer.guidance.sampler import sample


def laion_aesthetic_layout(width: int) -> torch.nn.Sequential:
    """The improved-aesthetic-predictor MLP: Linear layers and dropouts, no activations."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(width, 32),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(32, 16),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(16, 8),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(8, 4),
        torch.nn.Linear(4, 1),
    ).eval()


def test_a_laion_style_head_scores_as_its_torch_module(tmp_path):
    module = laion_aesthetic_layout(24)
    path = tmp_path / "aesthetic.safetensors"
    save_file({f"layers.{k}": v for k, v in module.state_dict().items()}, str(path))
    head = load_reward_head(path)
    x = torch.randn(5, 24)
    assert head.in_features == 24 and len(head.layers) == 5
    assert torch.allclose(head(x), module(x)[:, 0], atol=1e-6)


def test_a_single_linear_head_and_activations_between_layers():
    linear = torch.nn.Linear(6, 1)
    x = torch.randn(3, 6)
    assert torch.allclose(RewardHead(linear.state_dict())(x), linear(x)[:, 0], atol=1e-6)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))
    head = RewardHead({f"net.{k}": v for k, v in mlp.state_dict().items()}, activation="relu")
    assert torch.allclose(head(x), mlp(x)[:, 0], atol=1e-6)
    assert not torch.allclose(RewardHead({f"net.{k}": v for k, v in mlp.state_dict().items()})(x), mlp(x)[:, 0])


def test_a_head_read_under_inference_mode_still_gives_gradients():
    linear = torch.nn.Linear(6, 1)
    with torch.inference_mode():
        head = RewardHead(linear.state_dict())
    x = torch.randn(3, 6, requires_grad=True)
    (grad,) = torch.autograd.grad(head(x).sum(), x)
    assert torch.allclose(grad, linear.weight.detach().expand(3, -1))


def test_layers_are_taken_in_numeric_order_not_text_order():
    first, second = torch.nn.Linear(4, 3), torch.nn.Linear(3, 1)
    state = {"layers.10.weight": second.weight, "layers.10.bias": second.bias, "layers.2.weight": first.weight, "layers.2.bias": first.bias}
    x = torch.randn(2, 4)
    assert torch.allclose(RewardHead(state)(x), second(first(x))[:, 0], atol=1e-6)


@pytest.mark.parametrize(
    "state, message",
    [
        ({}, "no Linear layer"),
        ({"a.weight": torch.zeros(3, 4), "b.weight": torch.zeros(1, 5)}, "takes 5 inputs but the layer before it gives 3"),
        ({"a.weight": torch.zeros(2, 4)}, "ends in 2 outputs"),
        ({"conv.weight": torch.zeros(1, 3, 3, 3)}, "Linear layers only"),
        ({"a.weight": torch.zeros(1, 4), "a.bias": torch.zeros(2)}, "Linear layers only"),
    ],
)
def test_files_that_are_not_heads_are_refused_with_what_is_wrong(state, message):
    with pytest.raises(SteerError, match=message):
        RewardHead(state)


@pytest.fixture
def clip(tiny_clip):
    return tiny_clip


def test_a_head_for_another_clip_width_is_refused_before_sampling(clip):
    encoder = HFCLIPEncoder(clip)
    with pytest.raises(SteerError, match=f"scores 768-d CLIP embeddings but .* gives {encoder.embed_dim}-d"):
        RewardLoss(encoder, RewardHead(torch.nn.Linear(768, 1).state_dict(), name="aesthetic.safetensors"))


def test_the_loss_is_the_negative_score_of_the_normalised_embedding(clip):
    encoder = HFCLIPEncoder(clip)
    head = RewardHead(torch.nn.Linear(encoder.embed_dim, 1).state_dict())
    images = torch.rand(2, 3, 32, 32)
    expected = head(torch.nn.functional.normalize(encoder.embed(images), dim=-1))
    assert torch.allclose(RewardLoss(encoder, head)(images), -expected)


@pytest.mark.parametrize("masked", [False, True], ids=["whole image", "in a region"])
def test_guidance_raises_the_score_against_unguided_on_the_same_seed(clip, masked):
    encoder = HFCLIPEncoder(clip)
    torch.manual_seed(4)
    loss = RewardLoss(encoder, RewardHead(torch.nn.Linear(encoder.embed_dim, 1).state_dict()))
    if masked:
        mask = torch.zeros(16, 16)
        mask[4:12, 2:10] = 1
        loss = MaskedLoss(loss, Region(mask))
    config = dataclasses.replace(preset("paper"), augment=AugmentConfig(copies=0))
    sigmas = karras_like_sigmas(8, sigma_max=2.0)
    start = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    finals = {}
    for label, chosen in (("unguided", dataclasses.replace(config, scale=0.0)), ("guided", config)):
        with torch.no_grad():
            finals[label] = loss(sample(GaussianDenoiser(), lambda x: x, loss, start.clone(), sigmas, chosen, seed=5))
    assert (finals["guided"] < finals["unguided"]).all(), finals
