from collections import Counter

import pytest
import torch
from unit.tiny_sd import single_thread, tiny_photos  # noqa: F401 (single_thread: pytest fixtures)

from steer.errors import SteerError
from steer.personalize.data import (
    AugmentationConfig,
    AugmentationDraw,
    TrainingImages,
    image_order,
    rotate_expanded,
    sample_generator,
)


@pytest.mark.parametrize("count", [0, 1, 2, 21])
def test_bad_photo_counts_are_refused(count):
    photos = [torch.rand(3, 16, 16) for _ in range(count)]
    with pytest.raises(SteerError, match="3 to 20 photos"):
        TrainingImages(photos, 16)


@pytest.mark.parametrize("count", [3, 20])
def test_photos_of_any_size_give_square_batches_in_minus_one_to_one(count):
    images = TrainingImages(tiny_photos(count), 16)
    samples = torch.stack([images.sample(index % count, sample_generator(7, index)) for index in range(count)])
    assert samples.shape == (count, 3, 16, 16)
    assert samples.min() >= -1 and samples.max() <= 1


def test_channel_layouts_and_comfy_batches_are_accepted():
    grey = [torch.rand(1, 20, 30) for _ in range(3)]
    rgba = [torch.rand(4, 20, 30) for _ in range(3)]
    assert {tuple(image.shape) for image in TrainingImages(grey, 16).images} == {(3, 16, 24)}
    assert {tuple(image.shape) for image in TrainingImages(rgba, 16).images} == {(3, 16, 24)}
    comfy_batch = torch.rand(4, 30, 20, 3)  # (B, H, W, C)
    assert len(TrainingImages.from_batch(comfy_batch, 16)) == 4
    with pytest.raises(SteerError, match="channels"):
        TrainingImages([torch.rand(2, 16, 16)] * 3, 16)
    with pytest.raises(SteerError, match="NaN"):
        TrainingImages([torch.full((3, 16, 16), float("nan"))] * 3, 16)


def test_large_photos_are_kept_at_the_training_size():
    images = TrainingImages([torch.rand(3, 200, 300)] * 3, 32)
    assert tuple(images.images[0].shape) == (3, 32, 48)


def test_augmentation_is_a_function_of_the_generator_seed():
    images = TrainingImages(tiny_photos(3), 16)
    first = images.sample(1, sample_generator(1, 2, 3))
    again = images.sample(1, sample_generator(1, 2, 3))
    other = images.sample(1, sample_generator(1, 2, 4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_draws_follow_the_official_probabilities():
    config = AugmentationConfig()
    draws = [AugmentationDraw.sample(config, sample_generator(0, index)) for index in range(4000)]
    rotated = sum(draw.rotate for draw in draws) / len(draws)
    flipped = sum(draw.flip for draw in draws) / len(draws)
    assert rotated == pytest.approx(0.75, abs=0.03)
    assert flipped == pytest.approx(0.25, abs=0.03)
    angles = [draw.angle for draw in draws]
    assert -45 <= min(angles) < -40 and 40 < max(angles) <= 45


def test_rotation_expands_the_canvas_and_matches_a_quarter_turn():
    image = torch.rand(3, 10, 16)
    quarter = rotate_expanded(image, 90.0)
    assert quarter.shape == (3, 16, 10)
    assert torch.allclose(quarter, torch.rot90(image, 1, dims=(1, 2)), atol=1e-4)
    assert rotate_expanded(image, 45.0).shape == (3, 19, 19)  # ceil(16·cos45 + 10·sin45) = 19


def test_image_order_shows_every_photo_equally_often_per_epoch():
    order = image_order(image_count=3, repeats=4, seed=5, positions=range(12))
    assert Counter(order) == {0: 4, 1: 4, 2: 4}
    assert order != image_order(3, 4, 6, range(12))
    assert image_order(3, 4, 5, range(6, 18))[:6] == order[6:]  # a pure function of the position
