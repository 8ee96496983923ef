"""The embedded digits model: committed weights load and behave (fast, CPU)."""

import numpy as np
import pytest
import torch

from steer.digits import model as digits
from steer.errors import SteerError

# Measured on the committed weights (20 DDIM steps, 32 samples, seeds 0-3): mean max-probability
# 0.76-0.79 and 78-81% above 0.5; real held-out digits give 0.93 and 97%.
MIN_JUDGE_CONFIDENCE = 0.6
MIN_CONFIDENT_RATE = 0.6


@pytest.fixture(scope="module")
def pretrained():
    return digits.load_pretrained()


def test_committed_weights_load_frozen_and_small(pretrained):
    for module in (pretrained.unet, pretrained.guide, pretrained.judge):
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
        assert all(p.device.type == "cpu" for p in module.parameters())
    total = sum((digits.WEIGHTS_DIR / name).stat().st_size for name in (digits.DDPM_FILE, digits.GUIDE_FILE, digits.JUDGE_FILE))
    assert total < 10e6
    assert pretrained.alphas_cumprod.shape == (1000,)
    assert pretrained.metadata["ddpm"]["unet_config"]["block_out_channels"] == list(digits.UNET_CONFIG["block_out_channels"])


def test_splits_are_fixed_and_disjoint():
    idx = digits._split_indices()
    assert len(idx["A"]) == 899 and len(idx["B"]) == 898
    assert not set(idx["A"]) & set(idx["B"])
    assert set(idx["judge_train"]) | set(idx["heldout"]) == set(idx["B"])
    assert not set(idx["judge_train"]) & set(idx["heldout"])
    assert not set(idx["ddpm_train"]) & set(idx["heldout"])
    assert np.array_equal(idx["A"], digits._split_indices()["A"])

    images, labels = digits.load_digits_images("heldout")
    assert images.shape == (298, 1, 16, 16) and labels.shape == (298,)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.mean() < 0.5  # ink = 1 on a dark background
    with pytest.raises(SteerError):
        digits.load_digits_images("train")


def test_sigma_schedule():
    sigmas = digits.sigmas_for_steps(20)
    assert sigmas.shape == (21,) and sigmas.dtype == torch.float32
    assert sigmas[-1] == 0.0
    assert torch.all(sigmas[:-1] > sigmas[1:])
    training = digits.training_sigmas()
    assert sigmas[0] == pytest.approx(float(training[-1]))  # trailing spacing starts at t=999
    assert torch.allclose(digits.sigmas_for_steps(1000)[:-1], training.flip(0))


def test_timestep_interpolates_in_log_sigma(pretrained):
    denoiser = pretrained.denoiser
    training = denoiser.sigmas
    assert torch.allclose(denoiser.timestep(training[[0, 10, 500, 999]]), torch.tensor([0.0, 10.0, 500.0, 999.0]))
    between = (training[10] * training[11]).sqrt()
    assert denoiser.timestep(between.view(1)).item() == pytest.approx(10.5, abs=1e-3)
    assert denoiser.timestep(torch.tensor([1e-4, 1e4])).tolist() == [0.0, 999.0]


def test_encode_decode_roundtrip():
    images, _ = digits.load_digits_images("heldout")
    assert torch.allclose(digits.decode(digits.encode(images)), images)
    assert digits.decode(torch.tensor([-1.0, 1.0])).tolist() == [0.0, 1.0]


def test_denoiser_is_differentiable_wrt_x(pretrained):
    x = torch.randn(3, 1, 16, 16) * 5.0
    x.requires_grad_(True)
    x0 = pretrained.denoiser(x, torch.tensor([5.0, 1.0, 0.2]))
    assert x0.shape == x.shape
    loss = pretrained.guide(digits.decode(x0)).log_softmax(dim=1)[:, 3].sum()
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_denoiser_returns_a_clean_digit_at_small_sigma(pretrained):
    images, _ = digits.load_digits_images("heldout")
    x0 = digits.encode(images[:32])
    sigma = 0.05
    noisy = x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        denoised = pretrained.denoiser(noisy, sigma)
    error = (denoised - x0).pow(2).mean().item()
    assert error < 3e-3  # measured 9e-4
    assert error < (noisy - x0).pow(2).mean().item()  # it removes noise rather than copying it


def test_unguided_ddim_samples_look_like_digits(pretrained):
    sigmas = digits.sigmas_for_steps(20)
    x = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    with torch.no_grad():
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            x0 = pretrained.denoiser(x, sigma)
            x = x0 + sigma_next * (x - x0) / sigma  # DDIM, eta = 0
        confidence = pretrained.judge(digits.decode(x).clamp(0, 1)).softmax(dim=1).max(dim=1).values
    assert confidence.mean() > MIN_JUDGE_CONFIDENCE
    assert (confidence > 0.5).float().mean() > MIN_CONFIDENT_RATE


def test_classifiers_are_accurate_on_their_held_out_halves(pretrained):
    images_b, labels_b = digits.load_digits_images("B")
    images_a, labels_a = digits.load_digits_images("A")
    with torch.no_grad():
        guide_accuracy = (pretrained.guide(images_b).argmax(dim=1) == labels_b).float().mean()
        judge_accuracy = (pretrained.judge(images_a).argmax(dim=1) == labels_a).float().mean()
    assert guide_accuracy > 0.9
    assert judge_accuracy > 0.9


def test_judge_features_give_a_small_frechet_distance_between_real_sets(pretrained):
    heldout, _ = digits.load_digits_images("heldout")
    images_a, _ = digits.load_digits_images("A")
    noise = torch.rand(298, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = pretrained.judge_features(heldout)
        assert reference.shape == (298, 64)
        real = digits.frechet_distance(pretrained.judge_features(images_a), reference)
        junk = digits.frechet_distance(pretrained.judge_features(noise), reference)
    assert real < junk / 10


def test_classifiers_accept_rgb_and_other_sizes(pretrained):
    images, labels = digits.load_digits_images("heldout")
    rgb_small = torch.nn.functional.interpolate(images[:64], size=8, mode="bilinear").repeat(1, 3, 1, 1)
    with torch.no_grad():
        accuracy = (pretrained.judge(rgb_small).argmax(dim=1) == labels[:64]).float().mean()
    assert accuracy > 0.8
    with pytest.raises(SteerError):
        pretrained.guide(torch.zeros(2, 2, 16, 16))
