"""AttnDreamBooth on an SDXL-shaped diffusers model: one learned vector per text encoder (CLIP-L and
CLIP-G), the pooled vector and size conditioning, training, preview and export. Tiny random models."""

import pytest
import torch
from safetensors.torch import load_file
from unit.tiny_sd import single_thread, tiny_photos, tokenizer_folder  # noqa: F401

from steer.benchmarks.random_diffusers import SDXL_G_WIDTH, TEXT_WIDTH, random_sdxl_components
from steer.errors import SteerError
from steer.personalize.data import TrainingImages
from steer.personalize.diffusers_backbone import DiffusersBackbone
from steer.personalize.export import concept_from_backbone, write_concept
from steer.personalize.preview import preview_image
from steer.personalize.regularizer import AttentionCapture, attention_regularizer
from steer.personalize.stages import RegularizerWeights, custom_plan
from steer.personalize.trainer import RuntimeOptions, train

RESOLUTION = 16
PROMPT = "a photo of a [V] dog"


@pytest.fixture
def components(tokenizer_folder):  # noqa: F811
    return random_sdxl_components(tokenizer_folder, sample_size=RESOLUTION // 2)


@pytest.fixture
def backbone(components):
    model = DiffusersBackbone(**components, identity="tiny-sdxl")
    model.reset_token("dog")
    return model


def test_each_text_encoder_has_its_own_vector_started_from_the_category_word(backbone):
    groups = backbone.parameter_groups()
    assert set(groups["token"]) == {"clip_l", "clip_g"}
    vectors = backbone.token_embeddings()
    assert {key: tuple(vector.shape) for key, vector in vectors.items()} == {"clip_l": (1, TEXT_WIDTH), "clip_g": (1, SDXL_G_WIDTH)}
    for tower in backbone.towers:
        dog = tower.word_ids("dog")[0]
        assert torch.equal(vectors[tower.key][0], tower.encoder.get_input_embeddings().weight[dog].float())
    with pytest.raises(AttributeError, match="one learned vector per text encoder"):
        backbone.token


def test_the_prompt_is_both_encoders_penultimate_states_and_clip_g_pooled(backbone):
    """With the vectors at their start, [V] reads as the category word: the prompt's conditioning is
    the plain prompt's, which is diffusers' SDXL pipeline encoding (hidden_states[-2] of each, text_embeds)."""
    prompt = backbone.encode_prompt(PROMPT)
    assert prompt.embeddings.shape == (1, 77, TEXT_WIDTH + SDXL_G_WIDTH) and prompt.pooled.shape == (1, SDXL_G_WIDTH)
    plain = backbone.encode_text("a photo of a dog dog")
    torch.testing.assert_close(prompt.embeddings, plain.embeddings)
    torch.testing.assert_close(prompt.pooled, plain.pooled)
    ids = backbone.towers[1].tokenizer("a photo of a dog dog", padding="max_length", max_length=77, return_tensors="pt").input_ids
    reference = backbone.towers[1].encoder(ids, output_hidden_states=True)
    torch.testing.assert_close(plain.embeddings[..., TEXT_WIDTH:], reference.hidden_states[-2])
    torch.testing.assert_close(plain.pooled, reference.text_embeds)
    assert prompt.token_index == 5 and prompt.category_index == 6


def test_the_unet_needs_the_pooled_vector_and_reads_it(backbone):
    prompt = backbone.encode_prompt(PROMPT)
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 700])
    text = prompt.embeddings.expand(2, -1, -1)
    with pytest.raises(ValueError, match="pooled"):
        backbone.predict_noise(x, t, text)
    with torch.no_grad():
        one = backbone.predict_noise(x, t, text, prompt.pooled.expand(2, -1))
        other = backbone.predict_noise(x, t, text, torch.zeros(2, SDXL_G_WIDTH))
    assert one.shape == x.shape and not torch.allclose(one, other)


def test_the_regularizer_and_the_loss_reach_both_vectors(backbone):
    for tower in backbone.towers:
        tower.token.requires_grad_(True)
    prompt = backbone.encode_prompt(PROMPT)
    capture = AttentionCapture()
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([5, 900])
    text = prompt.expand(2)
    with backbone.attention_capture(capture), capture.recording(prompt.token_index, prompt.category_index) as maps:
        prediction = backbone.predict_noise(x, t, text.embeddings, text.pooled)
    # The second level's two transformer blocks, twice on the way down and up, plus the middle block.
    assert len(maps) == 1 * 2 + 2 * 2 + 2
    regularizer = attention_regularizer(maps, RegularizerWeights(2.0, 5.0))
    (prediction.square().mean() + regularizer).backward()
    for tower in backbone.towers:
        assert tower.token.grad is not None and tower.token.grad.abs().sum() > 0, tower.key


def test_missing_or_mismatched_second_encoder_is_a_clear_error(components):
    without = {key: value for key, value in components.items() if key not in ("text_encoder_2", "tokenizer_2")}
    with pytest.raises(SteerError, match="needs both text encoders"):
        DiffusersBackbone(**without)
    swapped = dict(components, text_encoder_2=components["text_encoder"])
    with pytest.raises(SteerError, match="does not match the UNet"):
        DiffusersBackbone(**swapped)


def test_three_stages_train_and_export_both_vectors_and_the_sdxl_unet(backbone, tmp_path):
    plan = custom_plan(
        token_steps=2,
        cross_attention_steps=1,
        unet_steps=1,
        token_batch_size=2,
        cross_attention_batch_size=2,
        unet_batch_size=2,
        token_learning_rate=0.05,
        unet_learning_rate=1e-3,
        resolution=RESOLUTION,
    )
    start = backbone.token_embeddings()
    result = train(backbone, TrainingImages(tiny_photos(3), RESOLUTION), "dog", plan, seed=3, options=RuntimeOptions(precision="fp32"))
    assert [entry["stage"] for entry in result.history] == ["token", "token", "cross_attention", "unet"]
    assert all(entry["regularizer"] > 0 for entry in result.history)
    trained = backbone.token_embeddings()
    assert all(not torch.equal(trained[key], start[key]) for key in ("clip_l", "clip_g"))

    concept = concept_from_backbone(backbone, result)
    assert "label_emb.0.0.weight" in concept.unet_deltas  # stage 3 trains SDXL's size/pooled embedding too
    paths = write_concept(concept, "my_dog", tmp_path / "embeddings", tmp_path / "loras", unet_format="full")
    embedding = load_file(paths.embedding)
    assert set(embedding) == {"clip_l", "clip_g"}
    torch.testing.assert_close(embedding["clip_g"], trained["clip_g"])
    assert "diffusion_model.label_emb.0.0.diff" in load_file(paths.unet)


def test_the_preview_samples_with_the_pooled_vector(backbone):
    image = preview_image(backbone, "a [V] dog on a beach", seed=1, size=RESOLUTION, steps=3)
    assert image.shape == (3, RESOLUTION, RESOLUTION) and torch.isfinite(image).all()
