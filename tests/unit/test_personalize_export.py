import json

import pytest
import torch
from safetensors.torch import load_file
from unit.tiny_sd import RESOLUTION, single_thread, tiny_backbone, tiny_photos, write_tokenizer_files  # noqa: F401 (single_thread: pytest fixtures)

from steer import safe_files as atomic_files
from steer.errors import SteerError
from steer.personalize.data import TrainingImages
from steer.personalize.export import Concept, concept_from_backbone, lora_factors, trigger_phrase, unet_state_dict, write_concept
from steer.personalize.ldm_names import diffusers_to_ldm_names
from steer.personalize.stages import custom_plan
from steer.personalize.trainer import RuntimeOptions, train


def deltas():
    generator = torch.Generator().manual_seed(0)
    shapes = {
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (16, 32),  # linear
        "input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.bias": (16,),
        "input_blocks.1.0.in_layers.2.weight": (16, 8, 3, 3),  # 3×3 conv
        "input_blocks.1.1.proj_in.weight": (16, 16, 1, 1),  # SD1's 1×1 conv projection
        "input_blocks.1.0.in_layers.0.weight": (8,),  # group-norm scale
    }
    return {name: torch.randn(shape, generator=generator) * 1e-3 for name, shape in shapes.items()}


def comfy_lora_weight(tensors, key, shape):
    """How ComfyUI applies a LoRA (comfy/weight_adapter/lora.py): alpha/rank · up.flatten(1) @ down.flatten(1)."""
    up, down = tensors[f"{key}.lora_up.weight"].float(), tensors[f"{key}.lora_down.weight"].float()
    scale = tensors[f"{key}.alpha"].item() / down.shape[0]
    return scale * torch.mm(up.flatten(1), down.flatten(1)).reshape(shape)


def concept(unet_deltas=None):
    return Concept({"clip_l": torch.randn(1, 32)}, deltas() if unet_deltas is None else unet_deltas, "dog", {"preset": "official"})


def test_full_format_writes_exact_diffs_under_ldm_keys():
    tensors = unet_state_dict(deltas(), "full", dtype=torch.float32)
    assert set(tensors) == {
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.diff",
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.diff_b",
        "diffusion_model.input_blocks.1.0.in_layers.2.diff",
        "diffusion_model.input_blocks.1.1.proj_in.diff",
        "diffusion_model.input_blocks.1.0.in_layers.0.diff",
    }
    assert torch.equal(tensors["diffusion_model.input_blocks.1.0.in_layers.2.diff"], deltas()["input_blocks.1.0.in_layers.2.weight"])


def test_lora_reconstructs_the_delta_at_full_rank():
    tensors = unet_state_dict(deltas(), "lora", rank=32, dtype=torch.float32)
    for name, delta in deltas().items():
        key = "diffusion_model." + name.rsplit(".", 1)[0]
        if delta.dim() >= 2:
            assert torch.allclose(comfy_lora_weight(tensors, key, delta.shape), delta, atol=1e-8, rtol=1e-4), name
            assert f"{key}.diff" not in tensors
        elif name.endswith(".bias"):
            assert torch.equal(tensors[f"{key}.diff_b"], delta)
        else:
            assert torch.equal(tensors[f"{key}.diff"], delta)
    assert tensors["diffusion_model.input_blocks.1.0.in_layers.2.lora_down.weight"].shape == (16, 8, 3, 3)
    assert tensors["diffusion_model.input_blocks.1.0.in_layers.2.lora_up.weight"].shape == (16, 16, 1, 1)


def test_low_rank_lora_is_the_best_approximation():
    delta = deltas()["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"]
    up, down = lora_factors(delta, 4)
    assert (up.shape, down.shape) == ((16, 4), (4, 32))
    singular = torch.linalg.svdvals(delta)
    assert torch.linalg.matrix_norm(up @ down - delta).item() == pytest.approx(singular[4:].square().sum().sqrt().item(), rel=1e-4)


def test_write_concept_files_keys_and_metadata(tmp_path):
    paths = write_concept(concept(), "my_dog", tmp_path / "embeddings", tmp_path / "loras", unet_format="lora", rank=8)
    embedding = load_file(paths.embedding)
    assert list(embedding) == ["clip_l"] and embedding["clip_l"].shape == (1, 32)
    unet = load_file(paths.unet)
    assert all(key.startswith("diffusion_model.") for key in unet)
    assert unet["diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.lora_up.weight"].dtype == torch.float16
    metadata = json.loads(paths.metadata.read_text())
    assert metadata["category"] == "dog" and metadata["preset"] == "official" and metadata["lora_rank"] == 8
    assert metadata["trigger"] == trigger_phrase("my_dog", "dog") == "embedding:my_dog dog"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["embeddings", "loras", "my_dog.json", "my_dog.safetensors", "my_dog.safetensors"]


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "two words", "con", "x" * 65, "name.json", "dog:1", None])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(SteerError, match="concept name"):
        write_concept(concept(), name, tmp_path / "embeddings", tmp_path / "loras")
    assert not any(tmp_path.rglob("*.safetensors"))


def test_an_existing_name_is_refused_unless_overwrite(tmp_path):
    first = concept()
    write_concept(first, "my_dog", tmp_path, tmp_path / "loras")
    with pytest.raises(SteerError, match="already exists"):
        write_concept(concept(), "my_dog", tmp_path, tmp_path / "loras")
    assert torch.equal(load_file(tmp_path / "my_dog.safetensors")["clip_l"], first.token_embeddings["clip_l"])
    second = concept()
    write_concept(second, "my_dog", tmp_path, tmp_path / "loras", overwrite=True)
    assert torch.equal(load_file(tmp_path / "my_dog.safetensors")["clip_l"], second.token_embeddings["clip_l"])


def test_a_failed_write_leaves_no_file_behind(tmp_path, monkeypatch):
    def broken(self, path, data):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_files.StagedFiles, "json", broken)
    with pytest.raises(OSError, match="disk full"):
        write_concept(concept(), "my_dog", tmp_path / "embeddings", tmp_path / "loras")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_trained_concept_exports_exactly_the_trained_change(tmp_path):
    tokenizer_folder = write_tokenizer_files(tmp_path / "tokenizer")
    backbone = tiny_backbone(tokenizer_folder)
    base = {name: p.detach().clone() for name, p in backbone.unet.named_parameters()}
    plan = custom_plan(
        token_steps=1, cross_attention_steps=2, unet_steps=0, token_batch_size=2, cross_attention_batch_size=2, resolution=RESOLUTION
    )
    result = train(
        backbone,
        TrainingImages(tiny_photos(3), RESOLUTION),
        "dog",
        plan,
        seed=0,
        options=RuntimeOptions(precision="fp32", gradient_checkpointing=False),
    )
    paths = write_concept(
        concept_from_backbone(backbone, result),
        "tiny_dog",
        tmp_path / "embeddings",
        tmp_path / "loras",
        unet_format="full",
        dtype=torch.float32,
    )

    assert torch.equal(load_file(paths.embedding)["clip_l"], backbone.token.detach()[None])
    diffs = load_file(paths.unet)
    ldm = diffusers_to_ldm_names(backbone.unet)
    changed = {name for name, p in backbone.unet.named_parameters() if not torch.equal(p, base[name])}
    assert changed and all(".attn2." in name for name in changed)
    expected_keys = {
        "diffusion_model." + ldm[name].rsplit(".", 1)[0] + (".diff_b" if name.endswith("bias") else ".diff") for name in changed
    }
    assert set(diffs) == expected_keys
    for name in changed:
        key = "diffusion_model." + ldm[name].rsplit(".", 1)[0] + (".diff_b" if name.endswith("bias") else ".diff")
        assert torch.allclose(base[name] + diffs[key], dict(backbone.unet.named_parameters())[name], atol=1e-7)
    metadata = json.loads(paths.metadata.read_text())
    assert metadata["base_model"] == "tiny-sd-0" and metadata["steps"] == 3 and metadata["plan"]["stages"][1]["steps"] == 2
