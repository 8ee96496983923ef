"""Region masks: on pixel losses, on model losses, through augmentation, in combinations and in the sampler."""

import dataclasses

import pytest
import torch
from unit.toy import GaussianDenoiser, karras_like_sigmas

from steer.errors import SteerError
from steer.guidance.augment import AugmentConfig, RandomAugment, augmented_loss
from steer.guidance.config import GuidanceConfig, TimeTravel, preset
from steer.guidance.losses.base import Window
from steer.guidance.losses.clip import CLIPImageLoss, HFCLIPEncoder
from steer.guidance.losses.color import ReferenceColorLoss, TargetColorLoss
from steer.guidance.losses.combine import CombinedLoss, LossTerm
from steer.guidance.losses.edge import EdgeLoss
from steer.guidance.losses.masked import MaskedLoss
from steer.guidance.region import Region
from steer.guidance.sampler import sample

RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


def left_half(height=16, width=16, batch=1):
    mask = torch.zeros(batch, height, width)
    mask[:, :, : width // 2] = 1.0
    return mask


def test_bad_masks_are_refused_with_what_to_change():
    with pytest.raises(SteerError, match="all zero.*paint the region"):
        Region(torch.zeros(8, 8))
    batch = torch.ones(3, 8, 8)
    batch[1] = 0
    with pytest.raises(SteerError, match="number 1 .*all zero"):
        Region(batch)
    with pytest.raises(SteerError, match=r"in \[0, 1\]"):
        Region(torch.full((8, 8), 2.0))
    with pytest.raises(SteerError, match="non-empty MASK"):
        Region(torch.ones(0, 8, 8))
    with pytest.raises(SteerError, match="batch of 2 masks but 3 samples"):
        Region(torch.ones(2, 8, 8)).weights(3, (8, 8), torch.device("cpu"), torch.float32)


def test_masks_are_resized_and_one_mask_serves_the_whole_batch():
    region = Region(left_half(64, 64)[0])  # (H, W), as a single ComfyUI mask may come
    weights = region.weights(3, (8, 8), torch.device("cpu"), torch.float32)
    assert weights.shape == (3, 1, 8, 8)
    assert torch.allclose(weights[:, :, :, :4], torch.ones(1)) and torch.allclose(weights[:, :, :, 4:], torch.zeros(1))
    per_sample = torch.zeros(2, 16, 16)
    per_sample[0, :4, :4] = 1
    per_sample[1, 8:, 8:] = 1
    boxes = Region(per_sample).boxes(2, (32, 32))
    assert boxes.tolist() == [[0, 0, 8, 8], [16, 16, 32, 32]]


@pytest.mark.parametrize(
    "loss",
    [
        TargetColorLoss(RED),
        TargetColorLoss(RED, match="average"),
        ReferenceColorLoss(torch.rand(1, 3, 12, 12)),
        EdgeLoss(torch.rand(1, 3, 12, 12)),
    ],
    ids=["pixels", "average", "reference", "edges"],
)
def test_pixel_losses_see_only_their_region(loss):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.allclose(MaskedLoss(loss, Region(torch.ones(16, 16)))(images), loss(images), atol=1e-5)
    masked = MaskedLoss(loss, Region(left_half(32, 32)))  # another size than the images
    (grad,) = torch.autograd.grad(masked(images).sum(), images)
    edge_reach = 2 if isinstance(loss, EdgeLoss) else 0  # a Sobel filter reads one pixel either side
    assert grad[..., 8 + edge_reach :].abs().max() == 0
    assert grad[..., :8].abs().sum() > 0
    # Only the region's pixels count: changing the rest leaves the value alone.
    changed = images.detach().clone()
    changed[..., 8 + edge_reach :] = torch.rand_like(changed[..., 8 + edge_reach :])
    assert torch.allclose(masked(changed), masked(images.detach()), atol=1e-6)


@pytest.fixture
def clip(tiny_clip):
    return tiny_clip


def test_model_losses_score_the_masks_bounding_box(clip):
    loss = CLIPImageLoss(HFCLIPEncoder(clip), torch.rand(1, 3, 20, 20))
    mask = torch.zeros(2, 32, 32)
    mask[0, 4:12, 6:20] = 1.0
    mask[1, 16:30, 2:10] = 0.5
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    masked = MaskedLoss(loss, Region(mask))
    values = masked(images)
    (grad,) = torch.autograd.grad(values.sum(), images)
    inside = mask[:, None].expand_as(grad) > 0
    assert grad[~inside].abs().max() == 0 and grad[inside].abs().sum() > 0
    # The boxes are 8x14 and 14x8; both crops go to the model at the largest height and width, 14x14.
    for i, box in enumerate((images[:1, :, 4:12, 6:20], images[1:, :, 16:30, 2:10])):
        crop = torch.nn.functional.interpolate(box, size=(14, 14), mode="bilinear", align_corners=False)
        assert torch.allclose(values[i], loss(crop)[0], atol=1e-5)


def test_augmented_weights_follow_their_image():
    augment = RandomAugment(dataclasses.replace(AugmentConfig(copies=4), color=False))
    weights = left_half(16, 16, 2)[:, None]
    torch.manual_seed(0)
    views, weight_views = augment.with_weights(weights.expand(-1, 3, -1, -1).clone(), weights)
    assert weight_views.shape == (8, 1, 16, 16)
    assert torch.allclose(views[:, :1], weight_views, atol=1e-6)
    assert not torch.allclose(weight_views, weights.repeat(4, 1, 1, 1))  # the geometry did move them


@pytest.mark.parametrize("pixelwise", [True, False], ids=["colour", "clip image"])
def test_augmented_masked_losses_leave_pixels_far_from_the_region_alone(pixelwise, clip):
    inner = TargetColorLoss(RED) if pixelwise else CLIPImageLoss(HFCLIPEncoder(clip), torch.rand(1, 3, 16, 16))
    masked = MaskedLoss(inner, Region(left_half(32, 32)))
    augment = RandomAugment(AugmentConfig(copies=6))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    torch.manual_seed(0)
    values = augmented_loss(masked, images, augment)
    assert values.shape == (2,)
    (grad,) = torch.autograd.grad(values.sum(), images)
    assert grad[..., 18:].abs().max() == 0  # resampling reaches a pixel or two past the edge, never further
    assert grad[..., :16].abs().sum() > 0


def test_combined_masked_losses_turn_each_region_its_own_colour():
    right = 1 - left_half(16, 16)
    combined = CombinedLoss(
        [LossTerm(MaskedLoss(TargetColorLoss(RED), Region(left_half()))), LossTerm(MaskedLoss(TargetColorLoss(BLUE), Region(right)))]
    )
    images = torch.full((1, 3, 16, 16), 0.5, requires_grad=True)
    optimizer = torch.optim.Adam([images], lr=0.02)
    augment = RandomAugment(AugmentConfig(copies=3))
    for _ in range(200):
        optimizer.zero_grad()
        augmented_loss(combined, images, augment).sum().backward()
        optimizer.step()
    left, right_side = images[0, :, :, :6].mean(dim=(1, 2)), images[0, :, :, 10:].mean(dim=(1, 2))
    # From grey, each side ends dominated by its own colour (augmented colour jitter keeps it off the exact target).
    assert left[0] - left[1:].max() > 0.5, left
    assert right_side[2] - right_side[:2].max() > 0.5, right_side


@pytest.mark.parametrize("name", ["mpgd", "paper"])
def test_the_sampler_region_confines_the_displacement(name):
    # The toy denoiser is per-pixel, so a pixel the guidance never moves ends exactly as unguided.
    # Time travel is off: it re-noises the whole latent with fresh draws, which unguided runs never take.
    config = dataclasses.replace(preset(name), augment=AugmentConfig(copies=0), time_travel=TimeTravel(repeats=1))
    sigmas = karras_like_sigmas(8, sigma_max=2.0)
    start = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    loss = TargetColorLoss(RED)
    unguided = sample(GaussianDenoiser(), lambda x: x, loss, start.clone(), sigmas, dataclasses.replace(config, scale=0.0), seed=3)
    confined = sample(GaussianDenoiser(), lambda x: x, loss, start.clone(), sigmas, config, seed=3, region=Region(left_half(64, 64)))
    everywhere = sample(GaussianDenoiser(), lambda x: x, loss, start.clone(), sigmas, config, seed=3)
    assert torch.equal(confined[..., 8:], unguided[..., 8:])
    inside = {k: loss(v[..., :8]) for k, v in (("unguided", unguided), ("confined", confined), ("everywhere", everywhere))}
    # Inside, the confined run gets at least most of what unmasked guidance achieves there.
    assert (inside["unguided"] - inside["confined"] > 0.8 * (inside["unguided"] - inside["everywhere"])).all(), inside


def test_a_mask_batch_that_does_not_match_the_samples_stops_the_sampler_before_the_first_step():
    sigmas = karras_like_sigmas(3)
    unguided_start = GuidanceConfig(window=Window(0.9, 1.0))  # the first steps are not guided
    with pytest.raises(SteerError, match="batch of 3 masks but 2 samples"):
        sample(
            GaussianDenoiser(),
            lambda x: x,
            TargetColorLoss(RED),
            torch.randn(2, 3, 8, 8),
            sigmas,
            unguided_start,
            region=Region(torch.ones(3, 8, 8)),
        )
    with pytest.raises(SteerError, match="batch of 3 masks but 2 samples"):
        sample(
            GaussianDenoiser(),
            lambda x: x,
            TargetColorLoss(RED),
            torch.randn(2, 3, 8, 8),
            sigmas,
            GuidanceConfig(),
            region=Region(torch.ones(3, 8, 8)),
        )


def test_a_mask_made_under_inference_mode_still_gives_gradients():
    # ComfyUI runs every node under torch.inference_mode(); the sampler's backward runs outside it.
    with torch.inference_mode():
        loss = MaskedLoss(TargetColorLoss(RED), Region(left_half()))
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(images).sum(), images)
    assert grad[..., :8].abs().sum() > 0


class MixingDenoiser(GaussianDenoiser):
    """The toy denoiser followed by a 3x3 blur: like a real model, what happens in the region reaches the rest."""

    def __call__(self, x, sigma):
        return torch.nn.functional.avg_pool2d(super().__call__(x, sigma), 3, stride=1, padding=1, count_include_pad=False)


@pytest.mark.parametrize("name", ["mpgd", "paper"])
def test_outside_the_region_the_sampler_keeps_the_unguided_run_or_leaves_it_free(name):
    config = dataclasses.replace(preset(name), augment=AugmentConfig(copies=0))
    sigmas = karras_like_sigmas(8, sigma_max=2.0)
    start = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    loss, region = TargetColorLoss(RED), Region(left_half())

    def run(scale=None, **options):
        chosen = config if scale is None else dataclasses.replace(config, scale=scale)
        return sample(MixingDenoiser(), lambda x: x, loss, start.clone(), sigmas, chosen, seed=3, **options)

    unguided = run(scale=0.0)
    kept, free = run(region=region), run(region=region, outside="free")
    assert torch.equal(kept[..., 8:], unguided[..., 8:])  # time travel included: the rest is the unguided run
    assert (free[..., 8:] - unguided[..., 8:]).abs().max() > 1e-3  # the blur carries the region's change across
    assert (loss(kept[..., :8]) < loss(unguided[..., :8])).all()
    with pytest.raises(SteerError, match="outside must be one of"):
        run(region=region, outside="blend")
