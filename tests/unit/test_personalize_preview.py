"""Training previews: a seeded DDIM sample of the concept after each stage."""

import pytest
import torch
from unit.tiny_sd import RESOLUTION, one_torch_thread, tiny_backbone, tiny_photos, write_tokenizer_files

from steer.errors import SteerError
from steer.personalize.data import TrainingImages
from steer.personalize.preview import preview_image
from steer.personalize.stages import custom_plan
from steer.personalize.trainer import RuntimeOptions
from steer.personalize.training_run import train_concept

CPU = RuntimeOptions(precision="fp32", gradient_checkpointing=False)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    with one_torch_thread():
        model = tiny_backbone(write_tokenizer_files(tmp_path_factory.mktemp("bpe")))
        model.reset_token("dog")
        yield model


def test_a_preview_is_an_image_fixed_by_its_seed(backbone):
    with one_torch_thread():
        first = preview_image(backbone, "a photo of a [V] dog", seed=1, size=RESOLUTION, steps=4)
        again = preview_image(backbone, "a photo of a [V] dog", seed=1, size=RESOLUTION, steps=4)
        other = preview_image(backbone, "a photo of a [V] dog", seed=2, size=RESOLUTION, steps=4)
    assert first.shape == (3, RESOLUTION, RESOLUTION) and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_a_preview_prompt_without_the_placeholder_is_refused(backbone):
    with pytest.raises(SteerError, match=r"must hold \[V\] once"):
        preview_image(backbone, "a photo of a dog", seed=1, size=RESOLUTION)


def test_training_makes_one_preview_per_stage_that_trains_and_it_follows_the_weights(backbone, tmp_path):
    photos = TrainingImages(tiny_photos(3), RESOLUTION)
    plan = custom_plan(
        token_steps=2,
        cross_attention_steps=0,
        unet_steps=2,
        token_learning_rate=0.5,
        unet_learning_rate=0.01,
        token_batch_size=2,
        unet_batch_size=2,
        resolution=RESOLUTION,
    )
    with one_torch_thread():
        trained = train_concept(
            backbone, photos, "dog", plan, seed=0, name="preview_dog", checkpoint_root=tmp_path, options=CPU, preview_prompt=""
        )
    assert list(trained.previews) == ["token", "unet"]
    token_preview, unet_preview = trained.previews.values()
    assert token_preview.shape == (3, RESOLUTION, RESOLUTION) and not torch.equal(token_preview, unet_preview)
    with pytest.raises(SteerError, match=r"must hold \[V\] once"):
        train_concept(backbone, photos, "dog", plan, seed=0, name="p2", checkpoint_root=tmp_path, options=CPU, preview_prompt="a dog")
