"""Model-based losses (CLIP text, CLIP image, CLIP style, classifier) on tiny random models written by the tests."""

import dataclasses
import json
import math
import os

import pytest
import torch
from unit.tiny_models import write_tiny_classifier, write_tiny_clip, write_tiny_clip_vision
from unit.toy import CountingLoss, GaussianDenoiser, karras_like_sigmas

from steer.errors import SteerError
from steer.guidance.augment import AugmentConfig
from steer.guidance.config import GuidanceConfig, preset
from steer.guidance.hf_models import clear_cache, list_model_folders, load_guidance_model, resolve_model_folder
from steer.guidance.losses.classifier import ClassifierLoss, resolve_label
from steer.guidance.losses.clip import CLIPImageLoss, CLIPStyleLoss, CLIPTextLoss, HFCLIPEncoder, cosine_distance, gram, spherical_distance
from steer.guidance.preprocess import ImagePreprocess
from steer.guidance.sampler import sample


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core box OpenMP spinning makes them 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer_models")
    write_tiny_clip(root / "tiny-clip")
    write_tiny_classifier(root / "tiny-classifier")
    return root


@pytest.fixture(scope="module")
def clip(model_root):
    return load_guidance_model(model_root / "tiny-clip")


@pytest.fixture(scope="module")
def classifier(model_root):
    return load_guidance_model(model_root / "tiny-classifier")


def _reference(seed=1, size=40):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _all_losses(clip, classifier):
    encoder = HFCLIPEncoder(clip)
    return [
        CLIPTextLoss(encoder, "a red cat"),
        CLIPTextLoss(encoder, "a red cat", negative_prompt="a dog", distance="cosine"),
        CLIPImageLoss(encoder, _reference()),
        CLIPStyleLoss(encoder, _reference(), block=1),
        ClassifierLoss(classifier, "golden hour"),
        ClassifierLoss(classifier, 1, objective="neg_probability"),
    ]


class OneByOneDecoder(torch.nn.Module):
    """A stand-in VAE decoder: 4-channel latent → RGB through a 1x1 conv and a 4x upsample."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(4, 3, 1)

    def forward(self, latent):
        return torch.nn.functional.interpolate(torch.sigmoid(self.conv(latent)), scale_factor=4, mode="bilinear")


def test_every_loss_is_differentiable_down_to_the_latent(clip, classifier):
    decoder = OneByOneDecoder().requires_grad_(False)
    for loss in _all_losses(clip, classifier):
        latent = torch.randn(2, 4, 8, 8, requires_grad=True)
        values = loss(decoder(latent))
        assert values.shape == (2,), loss.name
        (grad,) = torch.autograd.grad(values.sum(), latent)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, loss.name


def test_weights_stay_frozen_and_get_no_gradient(clip, classifier):
    for loss in _all_losses(clip, classifier):
        images = torch.rand(1, 3, 32, 32, requires_grad=True)
        loss(images).sum().backward()
    for model in (clip, classifier):
        module = model.loaded.module
        assert not module.training
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())


def _final_losses(loss, config):
    sigmas = karras_like_sigmas(8, sigma_max=2.0)
    start = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    finals = {}
    for label, chosen in (("unguided", dataclasses.replace(config, scale=0.0)), ("guided", config)):
        out = sample(GaussianDenoiser(), lambda x: x, loss, start.clone(), sigmas, chosen, seed=5)
        with torch.no_grad():
            finals[label] = loss(out)
    return finals


def test_guided_sampling_lowers_each_loss_against_unguided_on_the_same_seed(clip, classifier):
    # The paper preset (Polyak step, time travel) without augmentation: augmented views score a
    # different objective (colour jitter shifts Gram statistics), tested separately below.
    config = dataclasses.replace(preset("paper"), augment=AugmentConfig(copies=0))
    for loss in _all_losses(clip, classifier):
        finals = _final_losses(loss, config)
        assert (finals["guided"] < finals["unguided"]).all(), (loss.name, finals)


def test_guidance_with_random_augmentation_lowers_the_text_loss(clip):
    config = dataclasses.replace(preset("paper"), augment=AugmentConfig(copies=4))
    finals = _final_losses(CLIPTextLoss(HFCLIPEncoder(clip), "a red cat"), config)
    assert (finals["guided"] < finals["unguided"]).all(), finals


def test_augmented_views_go_through_the_model_in_one_forward(clip):
    encoder = HFCLIPEncoder(clip)
    loss = CountingLoss(CLIPTextLoss(encoder, "a red cat"))
    vision_batches = []
    hook = clip.loaded.module.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: vision_batches.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    try:
        config = GuidanceConfig(step_rule="normalized", scale=0.2, augment=AugmentConfig(copies=5))
        sigmas = karras_like_sigmas(3)
        sample(GaussianDenoiser(), lambda x: x, loss, torch.randn(2, 3, 16, 16) * sigmas[0], sigmas, config, seed=0)
    finally:
        hook.remove()
    assert loss.batch_sizes == [10, 10, 10]
    assert vision_batches == [10, 10, 10]  # one forward of |T|·B images per step


def test_spherical_and_cosine_distances_follow_their_formulas():
    a, b = torch.randn(4, 16), torch.randn(4, 16)
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    assert torch.allclose(spherical_distance(a, b), 2 * torch.arcsin((an - bn).norm(dim=-1) / 2) ** 2, atol=1e-6)
    assert torch.allclose(cosine_distance(a, b), 1 - (an * bn).sum(-1), atol=1e-6)
    # Great-circle: the spherical distance of unit vectors at angle θ is θ²/2.
    theta = torch.tensor(0.7)
    assert math.isclose(
        float(spherical_distance(torch.tensor([[1.0, 0.0]]), torch.stack([theta.cos(), theta.sin()])[None])), 0.7**2 / 2, rel_tol=1e-5
    )


def test_negative_prompt_pushes_away_with_its_weight(clip):
    encoder = HFCLIPEncoder(clip)
    images = torch.rand(3, 3, 32, 32)
    positive = CLIPTextLoss(encoder, "a red cat")
    negative_only = CLIPTextLoss(encoder, "a dog")
    both = CLIPTextLoss(encoder, "a red cat", negative_prompt="a dog", negative_weight=0.25)
    with torch.no_grad():
        assert torch.allclose(both(images), positive(images) - 0.25 * negative_only(images), atol=1e-5)


def test_image_loss_is_zero_for_its_reference_and_style_loss_too(clip):
    encoder = HFCLIPEncoder(clip)
    reference = _reference()
    with torch.no_grad():
        assert float(CLIPImageLoss(encoder, reference)(reference)) < 1e-5
        assert float(CLIPStyleLoss(encoder, reference, block=0)(reference)) < 1e-5
        assert float(CLIPStyleLoss(encoder, reference, block=0)(torch.rand(1, 3, 40, 40))) > 1e-3


def test_style_tokens_stop_at_the_chosen_block(clip):
    encoder = HFCLIPEncoder(clip)
    images = torch.rand(2, 3, 32, 32)
    calls = []
    layers = clip.loaded.module.vision_model.encoder.layers
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            tokens = encoder.block_tokens(images, 0)
    finally:
        for h in hooks:
            h.remove()
    assert calls == [0]  # the second block never ran
    assert tokens.shape == (2, 16, 32)  # (32/8)² patch tokens, class token dropped
    assert gram(tokens).shape == (2, 32, 32)
    with pytest.raises(SteerError, match="between 0 and 1"):
        CLIPStyleLoss(encoder, _reference(), block=2)


def test_preprocess_resizes_and_normalises_without_rounding():
    prep = ImagePreprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = torch.full((1, 3, 64, 48), 0.5 + 1e-4, requires_grad=True)
    out = prep(images)
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out, torch.full_like(out, 4e-4), atol=1e-5)  # no 8-bit rounding: 1e-4 survives
    (grad,) = torch.autograd.grad(out.sum(), images)
    assert grad.abs().min() > 0
    cropped = dataclasses.replace(prep, fit="center_crop")(torch.rand(2, 1, 64, 48))
    assert cropped.shape == (2, 3, 32, 32)


def test_preprocess_reads_hugging_face_size_forms():
    clip_like = {
        "size": {"shortest_edge": 224},
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "image_mean": [0.1, 0.2, 0.3],
        "image_std": [0.5, 0.5, 0.5],
        "resample": 3,
    }
    prep = ImagePreprocess.from_hf(clip_like)
    assert prep.size == (224, 224) and prep.resample == "bicubic" and prep.mean == (0.1, 0.2, 0.3)
    vit_like = {"size": {"height": 384, "width": 384}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 2}
    assert ImagePreprocess.from_hf(vit_like).size == (384, 384)
    assert ImagePreprocess.from_hf(vit_like, model_image_size=224).size == (224, 224)
    convnext_like = {"size": {"shortest_edge": 224}, "crop_pct": 0.875, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    assert ImagePreprocess.from_hf(convnext_like).crop_fraction == 0.875
    with pytest.raises(SteerError, match="image_mean"):
        ImagePreprocess.from_hf({"size": 224})


def test_the_cache_returns_the_same_model_and_reloads_a_changed_folder(tmp_path):
    folder = write_tiny_classifier(tmp_path / "cls")
    first, second = load_guidance_model(folder), load_guidance_model(str(folder) + "/")
    assert first.loaded is second.loaded and first.loaded.module is second.loaded.module
    config = folder / "config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_guidance_model(folder).loaded is not first.loaded
    clear_cache()


def test_models_move_to_the_loss_device_and_dtype_lazily(tmp_path):
    model = load_guidance_model(write_tiny_classifier(tmp_path / "cls"), precision="bfloat16")
    assert next(model.loaded.module.parameters()).dtype == torch.float32  # nothing moved at load time
    values = ClassifierLoss(model, "cat")(torch.rand(2, 3, 32, 32, requires_grad=True))
    assert values.dtype == torch.float32 and next(model.loaded.module.parameters()).dtype == torch.bfloat16
    clear_cache()


def test_a_model_built_inside_inference_mode_still_gives_gradients(tmp_path):
    folder = write_tiny_clip(tmp_path / "clip")
    with torch.inference_mode():  # as inside a ComfyUI prompt
        model = load_guidance_model(folder)
        loss = CLIPImageLoss(HFCLIPEncoder(model), _reference())
    with torch.enable_grad():
        images = torch.rand(1, 3, 32, 32, requires_grad=True)
        (grad,) = torch.autograd.grad(loss(images).sum(), images)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    clear_cache()


def test_a_missing_folder_says_what_to_put_there(tmp_path):
    with pytest.raises(SteerError, match="does not exist.*config.json, model.safetensors"):
        load_guidance_model(tmp_path / "nowhere")


def test_a_pickle_only_folder_is_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (folder / "preprocessor_config.json").write_text("{}")
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(SteerError, match=r"only pickle weights \(pytorch_model.bin\).*safetensors only"):
        load_guidance_model(folder)


def test_a_folder_missing_files_names_them(tmp_path):
    folder = write_tiny_classifier(tmp_path / "cls")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(SteerError, match="missing preprocessor_config.json"):
        load_guidance_model(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(SteerError, match=r"missing model.safetensors \(or model.safetensors.index.json\), preprocessor_config.json"):
        load_guidance_model(folder)


def test_a_clip_folder_without_tokenizer_serves_images_but_not_text(tmp_path):
    model = load_guidance_model(write_tiny_clip(tmp_path / "clip", tokenizer=False))
    encoder = HFCLIPEncoder(model)
    CLIPImageLoss(encoder, _reference())  # fine: images need no tokenizer
    with pytest.raises(SteerError, match="has no tokenizer.*tokenizer.json"):
        CLIPTextLoss(encoder, "a red cat")
    clear_cache()


def test_a_vision_only_clip_folder_serves_image_and_style_losses(tmp_path):
    model = load_guidance_model(write_tiny_clip_vision(tmp_path / "image_encoder"))
    assert model.kind == "clip_vision"
    encoder = HFCLIPEncoder(model)
    assert encoder.num_blocks == 3
    for loss in (CLIPImageLoss(encoder, _reference()), CLIPStyleLoss(encoder, _reference(), block=2)):
        images = torch.rand(2, 3, 32, 32, requires_grad=True)
        (grad,) = torch.autograd.grad(loss(images).sum(), images)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, loss.name
    with pytest.raises(SteerError, match="no text encoder"):
        CLIPTextLoss(encoder, "a red cat")
    clear_cache()


def test_a_wrong_label_lists_valid_labels(classifier):
    with pytest.raises(SteerError, match="not one of this classifier's labels.*0: cat, 1: dog, 2: Golden Hour"):
        ClassifierLoss(classifier, "horse")
    with pytest.raises(SteerError, match="out of range.*0 to 2"):
        ClassifierLoss(classifier, 7)
    assert ClassifierLoss(classifier, "GOLDEN hour").index == 2
    assert ClassifierLoss(classifier, "1").index == 1


def test_label_lists_are_shortened_for_big_classifiers():
    id2label = {str(i): f"class {i}" for i in range(1000)}
    with pytest.raises(SteerError, match=r"19: class 19, … \(1000 in all\)"):
        resolve_label(id2label, "zebra")


def test_classifier_objectives(classifier):
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ce = ClassifierLoss(classifier, "dog")(images)
        prob = ClassifierLoss(classifier, "dog", objective="neg_probability")(images)
        logit = ClassifierLoss(classifier, "dog", objective="neg_logit")(images)
    assert torch.allclose(prob, -torch.exp(-ce), atol=1e-5)
    assert (prob <= 0).all() and (prob >= -1).all() and logit.shape == (2,)


def test_models_of_the_wrong_kind_are_refused(clip, classifier):
    with pytest.raises(SteerError, match="not an image classifier"):
        ClassifierLoss(clip, "cat")
    with pytest.raises(SteerError, match="not CLIP"):
        HFCLIPEncoder(classifier)
    with pytest.raises(SteerError, match="needs a prompt"):
        CLIPTextLoss(HFCLIPEncoder(clip), "   ")


def test_model_folders_are_listed_as_folders_and_resolved_inside_the_root(model_root, tmp_path):
    (model_root / "group" / "nested").mkdir(parents=True, exist_ok=True)
    (model_root / "group" / "nested" / "config.json").write_text("{}")
    (model_root / "loose.safetensors").write_text("")
    assert list_model_folders([model_root, tmp_path / "absent"]) == ["group/nested", "tiny-classifier", "tiny-clip"]
    assert resolve_model_folder([tmp_path, model_root], "tiny-clip") == model_root / "tiny-clip"
    with pytest.raises(SteerError, match="not a path out of it"):
        resolve_model_folder([model_root], "../elsewhere")
    with pytest.raises(SteerError, match="not found"):
        resolve_model_folder([model_root], "missing")


def test_a_model_folder_of_another_kind_is_refused(tmp_path):
    folder = write_tiny_classifier(tmp_path / "bert")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="bert", architectures=["BertModel"])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SteerError, match="'bert' model.*CLIP folders"):
        load_guidance_model(folder)


def test_a_folder_asking_for_remote_code_loads_the_standard_class_and_runs_nothing(tmp_path, caplog):
    folder = write_tiny_classifier(tmp_path / "hostile")
    marker = tmp_path / "the_code_ran"
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\nfrom transformers import ViTForImageClassification as Evil\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Evil", "AutoModelForImageClassification": "evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    clear_cache()
    with caplog.at_level("WARNING", logger="steer"):
        model = load_guidance_model(folder)
    assert type(model.placed(torch.device("cpu"))).__name__ == "ViTForImageClassification"
    assert not marker.exists() and "never runs it" in caplog.text


def test_a_folder_whose_architecture_only_remote_code_knows_is_refused(tmp_path):
    folder = write_tiny_classifier(tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil_net", architectures=["EvilNet"], auto_map={"AutoModel": "evil.EvilNet"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SteerError, match="'evil_net' model"):
        load_guidance_model(folder)


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty"])
def test_a_damaged_weights_file_is_named_in_the_error(tmp_path, damage):
    folder = write_tiny_classifier(tmp_path / "damaged")
    weights = folder / "model.safetensors"
    content = {"truncated": weights.read_bytes()[:-100], "random bytes": os.urandom(2048), "empty": b""}[damage]
    weights.write_bytes(content)
    clear_cache()
    with pytest.raises(SteerError, match="model.safetensors is not a readable safetensors file"):
        load_guidance_model(folder)
