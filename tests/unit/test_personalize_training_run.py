"""The pieces around a training run: name checks before training, checkpoint folders and positions,
the augmented-view pool, the loss plot, and the fast LoRA factorisation."""

import pytest
import torch
from unit.tiny_sd import tiny_photos

from steer.errors import SteerError
from steer.personalize.checkpoint import CheckpointStore, TrainingState
from steer.personalize.data import TrainingImages
from steer.personalize.export import lora_factors
from steer.personalize.plot import plot_history
from steer.personalize.stages import OFFICIAL
from steer.personalize.training_run import check_target_free, checkpoint_folder, stage_offsets


def test_a_taken_name_fails_before_training(tmp_path):
    embeddings, loras, other = tmp_path / "embeddings", tmp_path / "loras", tmp_path / "other_loras"
    for folder in (embeddings, loras, other):
        folder.mkdir()
    check_target_free("dog", [embeddings], [loras, other], overwrite=False)  # nothing there
    (embeddings / "dog.pt").write_bytes(b"x")  # an older textual inversion of that name
    with pytest.raises(SteerError, match="already exists"):
        check_target_free("dog", [embeddings], [loras], overwrite=False)
    with pytest.raises(SteerError, match="could pick either"):  # overwrite would leave dog.pt shadowing
        check_target_free("dog", [embeddings], [loras], overwrite=True)
    (embeddings / "dog.pt").unlink()
    (loras / "dog.json").write_text("{}")
    check_target_free("dog", [embeddings], [loras, other], overwrite=True)  # replaced in place
    (other / "dog.safetensors").write_bytes(b"x")
    with pytest.raises(SteerError, match="could pick either"):
        check_target_free("dog", [embeddings], [loras, other], overwrite=True)


def test_checkpoint_folders_are_per_run_and_stale_runs_of_the_name_are_removed(tmp_path):
    old = checkpoint_folder(tmp_path, "dog", "a" * 64)
    old.mkdir(parents=True)
    (tmp_path / "cat-1234").mkdir()
    new = checkpoint_folder(tmp_path, "dog", "b" * 64)
    assert new.name == "dog-" + "b" * 16 and not old.exists() and (tmp_path / "cat-1234").exists()


def test_checkpoint_position_reads_only_the_progress_record(tmp_path):
    store = CheckpointStore(tmp_path, "fingerprint")
    assert store.position() is None
    store.save(TrainingState(stage_index=1, step=7, weights={"token/token": torch.zeros(3)}))
    assert store.position() == (1, 7)
    assert CheckpointStore(tmp_path, "another run").position() is None
    (tmp_path / "progress.json").write_text("{broken")
    assert store.position() is None


def test_stage_offsets_count_steps_over_all_stages():
    assert stage_offsets(OFFICIAL) == {"token": 0, "cross_attention": 60, "unet": 160}


def test_view_pool_returns_the_same_pixels_and_changes_the_fingerprint():
    plain = TrainingImages(tiny_photos(3), 16)
    pooled = TrainingImages(tiny_photos(3), 16, views_per_image=4, view_seed=9)
    views = list(pooled.all_views())
    assert len(views) == 12 and list(plain.all_views()) == []
    keys = {view.numpy().tobytes() for view in views}
    for sample in range(20):
        image = pooled.sample(sample % 3, torch.Generator().manual_seed(sample))
        assert image.shape == (3, 16, 16) and image.numpy().tobytes() in keys
    assert pooled.fingerprint_bytes() != plain.fingerprint_bytes()
    assert pooled.fingerprint_bytes() != TrainingImages(tiny_photos(3), 16, views_per_image=4, view_seed=10).fingerprint_bytes()
    with pytest.raises(SteerError, match="augmented views"):
        TrainingImages(tiny_photos(3), 16, views_per_image=-1)


def test_loss_plot_is_an_rgb_image():
    history = [
        {"stage": stage, "step": step, "loss": 1.0 / step, "diffusion": 1.0 / step, "regularizer": 0.01 * step}
        for stage in ("token", "cross_attention", "unet")
        for step in range(1, 6)
    ]
    history[3]["diffusion"] = float("nan")
    image = plot_history(history, title="my_dog")
    assert image.shape == (22 + 440, 720, 3) and 0.0 <= image.min() and image.max() <= 1.0
    assert plot_history([]).shape == (440, 720, 3)


def test_randomized_lora_factors_are_near_the_best_rank_r_approximation():
    torch.manual_seed(0)
    delta = (torch.randn(320, 32) * torch.logspace(0, -2, 32)) @ torch.randn(32, 2880) + 1e-3 * torch.randn(320, 2880)
    conv = delta.reshape(320, 320, 3, 3)
    rng_before = torch.random.get_rng_state()
    up, down = lora_factors(conv, 8)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's random stream is untouched
    assert up.shape == (320, 8, 1, 1) and down.shape == (8, 320, 3, 3)
    error = torch.linalg.matrix_norm(up.flatten(1) @ down.flatten(1) - delta)
    best = torch.linalg.svdvals(delta)[8:].square().sum().sqrt()
    assert error <= best * 1.001
    again = lora_factors(conv, 8)
    assert torch.equal(again[0], up) and torch.equal(again[1], down)  # the same file for the same delta


def test_latent_cache_encodes_each_view_once_and_respects_its_budget():
    from steer.personalize.latent_cache import LatentCache, sample_latents

    calls = []

    def encode(pixels):
        calls.append(pixels.shape[0])
        return pixels[:, :1] * 2, torch.ones_like(pixels[:, :1])

    views = [torch.full((3, 4, 4), float(index)) for index in range(5)]
    cache = LatentCache()
    assert cache.fill(views[:3], encode, batch_size=2) == 3 and calls == [2, 1]
    mean, std = cache.distribution(torch.stack([views[1], views[4], views[1]]), encode)
    assert calls == [2, 1, 1] and torch.equal(mean[:, 0, 0, 0], torch.tensor([2.0, 8.0, 2.0]))
    latents = sample_latents(mean, std, [torch.Generator().manual_seed(s) for s in (0, 1, 0)])
    assert torch.equal(latents[0], latents[2]) and not torch.equal(latents[0], latents[1])
    small = LatentCache(budget_bytes=2 * 16 * 4 * 2)  # room for two entries
    small.fill(views, encode)
    assert len(small) == 2 and views[4] in small and views[0] not in small


def test_a_view_pool_is_encoded_once_per_view_during_training(tmp_path):
    from unit.tiny_sd import RESOLUTION, one_torch_thread, tiny_backbone, write_tokenizer_files

    from steer.personalize.stages import custom_plan
    from steer.personalize.trainer import RuntimeOptions, train

    with one_torch_thread():
        backbone = tiny_backbone(write_tokenizer_files(tmp_path / "bpe"))
        photos = TrainingImages(tiny_photos(3), RESOLUTION, views_per_image=2, view_seed=1)
        assert backbone.cache_latents(photos.all_views()) == 6
        plan = custom_plan(
            token_steps=2,
            cross_attention_steps=1,
            unet_steps=1,
            token_batch_size=4,
            cross_attention_batch_size=4,
            unet_batch_size=4,
            resolution=RESOLUTION,
        )
        train(backbone, photos, "dog", plan, seed=0, options=RuntimeOptions(precision="fp32", gradient_checkpointing=False))
    assert backbone._latents.encoded == 6  # 16 samples drawn, the VAE ran only for the 6 views
