import pytest
import torch
from unit.tiny_sd import single_thread, tiny_backbone, tokenizer_folder  # noqa: F401 (single_thread, tokenizer_folder: pytest fixtures)

from steer.personalize.regularizer import AttentionCapture, attention_regularizer, token_statistics
from steer.personalize.stages import RegularizerWeights


def direct_regularizer(layer_maps, mean_weight, variance_weight):
    """The formula written out with Python loops over layers, batch items and tokens."""
    total = 0.0
    for maps in layer_maps:
        for item in range(maps.shape[0]):
            stats = []
            for token in (0, 1):
                values = maps[item, :, :, token].flatten().tolist()
                mean = sum(values) / len(values)
                variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
                stats.append((mean, variance))
            total += mean_weight * (stats[0][0] - stats[1][0]) ** 2 + variance_weight * (stats[0][1] - stats[1][1]) ** 2
    return total / len(layer_maps)


def hand_made_maps():
    generator = torch.Generator().manual_seed(0)
    # Layers at different resolutions and head counts, like a UNet's: (batch, heads, pixels, 2).
    return [torch.rand(3, heads, pixels, 2, generator=generator) ** 3 for heads, pixels in ((2, 64), (4, 16), (4, 16), (8, 4))]


@pytest.mark.parametrize("weights", [(0.1, 0.0), (2.0, 5.0), (0.0, 1.0)])
def test_regularizer_equals_the_formula_on_hand_made_maps(weights):
    maps = hand_made_maps()
    value = attention_regularizer(maps, RegularizerWeights(*weights))
    assert value.item() == pytest.approx(direct_regularizer(maps, *weights), rel=1e-5)


def test_statistics_are_over_heads_and_pixels_jointly_with_unbiased_variance():
    maps = torch.tensor([[[[1.0, 0.0], [3.0, 0.0]], [[5.0, 2.0], [7.0, 2.0]]]])  # (1, 2 heads, 2 pixels, 2 tokens)
    mean, variance = token_statistics(maps)
    assert mean.tolist() == [[4.0, 1.0]]
    assert variance.tolist() == [[pytest.approx(20 / 3), pytest.approx(4 / 3)]]


def test_capture_keeps_the_two_token_columns_and_only_while_recording():
    capture = AttentionCapture()
    probabilities = torch.rand(2, 3, 16, 77).softmax(-1)
    capture.record(probabilities)  # not recording: ignored
    with capture.recording(token_index=5, category_index=6) as maps:
        capture.record(probabilities)
    capture.record(probabilities)
    assert len(maps) == 1
    assert torch.equal(maps[0], probabilities[..., [5, 6]])
    # The official hook's layout (batch, tokens, heads, pixels) gives the same statistics.
    official = probabilities.permute(0, 3, 1, 2)
    mean, variance = token_statistics(maps[0])
    assert torch.allclose(mean, official.mean(dim=(2, 3))[:, [5, 6]])
    assert torch.allclose(variance, official.var(dim=(2, 3))[:, [5, 6]])


def test_capture_is_on_every_attn2_layer_only_and_does_not_change_the_prediction(tokenizer_folder):
    backbone = tiny_backbone(tokenizer_folder)
    backbone.reset_token("dog")
    prompt = backbone.encode_prompt("a photo of a [V] dog")
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([10, 700])
    with torch.no_grad():
        plain = backbone.predict_noise(latents, timesteps, prompt.embeddings.expand(2, -1, -1))
    capture = AttentionCapture()
    original = backbone.unet.attn_processors
    with backbone.attention_capture(capture):
        installed = backbone.unet.attn_processors
        with torch.no_grad(), capture.recording(prompt.token_index, prompt.category_index) as maps:
            captured = backbone.predict_noise(latents, timesteps, prompt.embeddings.expand(2, -1, -1))
    assert torch.allclose(plain, captured, atol=1e-5)
    changed = sorted(name for name in installed if installed[name] is not original[name])
    assert changed and all(name.endswith("attn2.processor") for name in changed)
    assert len(changed) == sum(name.endswith("attn2.processor") for name in original) == 7
    assert backbone.unet.attn_processors == original  # restored
    assert len(maps) == 7
    assert {tuple(m.shape) for m in maps} == {(2, 2, 64, 2), (2, 2, 16, 2)}  # (batch, heads, pixels, [V] and category)


def backward_through_capture(backbone, latent_seed, timesteps, loss_of):
    """One prediction of the tiny backbone with the attn2 capture on, the prompt encoded inside (so
    the token is in the graph), and loss_of(prediction, maps) back-propagated while the capture is
    still installed (gradient checkpointing recomputes there, outside the recording block)."""
    capture = AttentionCapture()
    with backbone.attention_capture(capture):
        prompt = backbone.encode_prompt("a photo of a [V] dog")
        latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(latent_seed))
        with capture.recording(prompt.token_index, prompt.category_index) as maps:
            prediction = backbone.predict_noise(latents, torch.tensor(timesteps), prompt.embeddings.expand(2, -1, -1))
        loss = loss_of(prediction, maps)
        loss.backward()
    return loss, maps


def test_regularizer_gradient_reaches_the_token_embedding_in_stage_one(tokenizer_folder):
    backbone = tiny_backbone(tokenizer_folder)
    backbone.reset_token("dog")
    backbone.token.requires_grad_(True)
    regularizer, _ = backward_through_capture(
        backbone, 2, [100, 900], lambda prediction, maps: attention_regularizer(maps, RegularizerWeights(0.1, 0.0))
    )
    assert regularizer.item() > 0
    assert backbone.token.grad is not None and backbone.token.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in backbone.unet.parameters())


def test_gradient_checkpointing_gives_the_same_gradients_with_capture(tokenizer_folder):
    def gradients(checkpointing):
        backbone = tiny_backbone(tokenizer_folder)
        backbone.reset_token("dog")
        backbone.set_gradient_checkpointing(checkpointing)
        trainable = backbone.parameter_groups()["cross_attention"]
        for parameter in trainable.values():
            parameter.requires_grad_(True)
        backbone.token.requires_grad_(True)
        _, maps = backward_through_capture(
            backbone,
            3,
            [5, 500],
            lambda prediction, maps: prediction.square().mean() + attention_regularizer(maps, RegularizerWeights(2.0, 5.0)),
        )
        assert len(maps) == 7
        return [backbone.token.grad] + [parameter.grad for parameter in trainable.values()]

    for plain, checkpointed in zip(gradients(False), gradients(True)):
        assert torch.allclose(plain, checkpointed, rtol=1e-4, atol=1e-7)
