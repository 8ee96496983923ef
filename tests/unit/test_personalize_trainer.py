import dataclasses
import json

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from unit.tiny_sd import RESOLUTION, single_thread, tiny_backbone, tiny_photos, tokenizer_folder  # noqa: F401 (single_thread, tokenizer_folder: pytest fixtures)

from steer.errors import SteerError
from steer.personalize import trainer as trainer_module
from steer.personalize.checkpoint import CheckpointStore
from steer.personalize.data import TrainingImages
from steer.personalize.stages import custom_plan
from steer.personalize.trainer import RuntimeOptions, run_fingerprint, train

CPU = RuntimeOptions(precision="fp32", gradient_checkpointing=False)


@pytest.fixture(scope="module")
def images():
    return TrainingImages(tiny_photos(3), RESOLUTION)


def short_plan(token=2, cross_attention=2, unet=2, batch=2, **more):
    return custom_plan(
        token_steps=token,
        cross_attention_steps=cross_attention,
        unet_steps=unet,
        token_batch_size=batch,
        cross_attention_batch_size=batch,
        unet_batch_size=batch,
        resolution=RESOLUTION,
        **more,
    )


def run_store(folder, backbone, images, plan, seed):
    """This run's checkpoints in `folder`, as training_run.train_concept names them."""
    return CheckpointStore(folder, run_fingerprint(backbone, images, "dog", plan, seed))


def snapshot(backbone):
    return {
        "token": {"token": backbone.token.detach().clone()},
        "unet": {name: p.detach().clone() for name, p in backbone.unet.named_parameters()},
        "text_encoder": {name: p.detach().clone() for name, p in backbone.text_encoder.named_parameters()},
        "vae": {name: p.detach().clone() for name, p in backbone.vae.named_parameters()},
    }


def changed_names(before, after):
    return {f"{part}/{name}" for part in before for name in before[part] if not torch.equal(before[part][name], after[part][name])}


@pytest.mark.parametrize("group", ["token", "cross_attention", "unet"])
def test_each_stage_changes_exactly_its_parameter_group(tokenizer_folder, images, group):
    backbone = tiny_backbone(tokenizer_folder)
    backbone.reset_token("dog")
    before = snapshot(backbone)
    steps = {name: (2 if name == group else 0) for name in ("token", "cross_attention", "unet")}
    train(backbone, images, "dog", short_plan(**steps), seed=0, options=CPU)
    changed = changed_names(before, snapshot(backbone))
    prefix = "token" if group == "token" else "unet"
    expected = {f"{prefix}/{name}" for name in backbone.parameter_groups()[group]}
    assert changed == expected  # all of the group moved, nothing else: text encoder, VAE, other weights bit-identical
    assert not any(p.requires_grad for g in backbone.parameter_groups().values() for p in g.values())


def test_resume_after_cancel_continues_at_the_next_step_and_matches_an_uninterrupted_run(tokenizer_folder, images, tmp_path):
    plan = short_plan(token=2, cross_attention=3, unet=2)
    reference = tiny_backbone(tokenizer_folder)
    uninterrupted = train(reference, images, "dog", plan, seed=3, options=CPU)

    class Cancelled(Exception):
        pass

    def cancel_in_stage_two(stage, step, total, loss):
        if (stage, step) == ("cross_attention", 1):
            raise Cancelled

    store = run_store(tmp_path, reference, images, plan, seed=3)  # every tiny backbone has the same identity
    with pytest.raises(Cancelled):
        train(tiny_backbone(tokenizer_folder), images, "dog", plan, seed=3, store=store, progress=cancel_in_stage_two, options=CPU)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert (progress["stage_index"], progress["step"]) == (1, 1)

    calls = []
    resumed_backbone = tiny_backbone(tokenizer_folder)  # fresh base weights, as after a restart
    resumed = train(resumed_backbone, images, "dog", plan, seed=3, store=store, progress=lambda *call: calls.append(call[:3]), options=CPU)
    assert resumed.resumed_at == ("cross_attention", 1)
    assert calls == [("cross_attention", 2, 3), ("cross_attention", 3, 3), ("unet", 1, 2), ("unet", 2, 2)]
    assert resumed.history == uninterrupted.history
    assert torch.equal(resumed_backbone.token, reference.token)
    for (name, trained), expected in zip(resumed_backbone.unet.named_parameters(), reference.unet.parameters()):
        assert torch.equal(trained, expected), name

    # A finished run re-run with the same inputs does no work and restores the result.
    again_backbone = tiny_backbone(tokenizer_folder)
    again = train(again_backbone, images, "dog", plan, seed=3, store=store, progress=lambda *call: calls.append(call), options=CPU)
    assert len(calls) == 4 and again.history == uninterrupted.history
    assert torch.equal(again_backbone.unet.conv_in.weight, reference.unet.conv_in.weight)


def test_a_checkpoint_from_other_inputs_is_not_resumed(tokenizer_folder, images, tmp_path):
    plan = short_plan(token=1, cross_attention=1, unet=0)
    first, second = tiny_backbone(tokenizer_folder), tiny_backbone(tokenizer_folder)
    train(first, images, "dog", plan, seed=1, store=run_store(tmp_path, first, images, plan, seed=1), options=CPU)
    other_seed = train(second, images, "dog", plan, seed=2, store=run_store(tmp_path, second, images, plan, seed=2), options=CPU)
    assert other_seed.resumed_at is None and len(other_seed.history) == 2


def test_gradient_accumulation_gives_the_full_batch_gradient(tokenizer_folder, images):
    def first_step_gradients(accumulation):
        backbone = tiny_backbone(tokenizer_folder)
        grads = []

        def keep(optimizer, args, kwargs):
            grads.extend(p.grad.clone() for group in optimizer.param_groups for p in group["params"])

        handle = register_optimizer_step_pre_hook(keep)
        try:
            result = train(
                backbone,
                images,
                "dog",
                short_plan(token=0, cross_attention=1, unet=0, batch=4, cross_attention_gradient_accumulation=accumulation),
                seed=5,
                options=CPU,
            )
        finally:
            handle.remove()
        return grads, result.history[0]

    full, full_losses = first_step_gradients(1)
    split, split_losses = first_step_gradients(4)
    assert full_losses["loss"] == pytest.approx(split_losses["loss"], rel=1e-5)
    assert full_losses["regularizer"] == pytest.approx(split_losses["regularizer"], rel=1e-4)
    assert len(full) == len(split) > 0
    for whole, parts in zip(full, split):  # equal up to float summation order
        assert (whole - parts).abs().max() <= 1e-4 * whole.abs().max()


def test_history_and_progress_report_every_step(tokenizer_folder, images):
    calls = []
    result = train(
        tiny_backbone(tokenizer_folder, prediction_type="v_prediction"),
        images,
        "dog",
        short_plan(token=2, cross_attention=1, unet=1),
        seed=0,
        progress=lambda *call: calls.append(call),
        options=CPU,
    )
    assert [call[:3] for call in calls] == [("token", 1, 2), ("token", 2, 2), ("cross_attention", 1, 1), ("unet", 1, 1)]
    assert [entry["loss"] for entry in result.history] == [call[3] for call in calls]
    for entry in result.history:
        assert entry["loss"] == pytest.approx(entry["diffusion"] + entry["regularizer"])
        assert entry["regularizer"] > 0
    assert result.seconds > 0


def test_a_bad_category_is_refused(tokenizer_folder, images):
    with pytest.raises(SteerError, match="category"):
        train(tiny_backbone(tokenizer_folder), images, "  ", short_plan(), seed=0, options=CPU)


@pytest.mark.parametrize("damage", ["corrupt weights", "weights named by a path", "torn progress"])
def test_a_damaged_checkpoint_is_never_loaded_and_training_starts_over(tokenizer_folder, images, tmp_path, caplog, damage):
    plan = short_plan(token=2, cross_attention=2, unet=0)
    reference = train(tiny_backbone(tokenizer_folder), images, "dog", plan, seed=3, options=CPU)

    def cancel_in_stage_two(stage, step, total, loss):
        if (stage, step) == ("cross_attention", 1):
            raise KeyboardInterrupt

    store = run_store(tmp_path, tiny_backbone(tokenizer_folder), images, plan, seed=3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_backbone(tokenizer_folder), images, "dog", plan, seed=3, store=store, progress=cancel_in_stage_two, options=CPU)
    progress_path = tmp_path / "progress.json"
    progress = json.loads(progress_path.read_text())
    if damage == "corrupt weights":
        (tmp_path / progress["weights"]).write_bytes(b"\x00" * 100)
    elif damage == "weights named by a path":
        progress_path.write_text(json.dumps({**progress, "weights": "../" + progress["weights"]}))
    else:
        progress_path.write_text(progress_path.read_text()[:40])
    with caplog.at_level("WARNING", logger="steer"):
        again = train(tiny_backbone(tokenizer_folder), images, "dog", plan, seed=3, store=store, options=CPU)
    assert again.resumed_at is None and again.history == reference.history
    assert "training starts over" in caplog.text


class Killed(BaseException):
    """A crash: the process is gone before the checkpoint a Cancel would write."""


def test_after_a_crash_the_run_resumes_from_the_last_periodic_checkpoint_and_counts_the_steps_lost(tokenizer_folder, images, tmp_path):
    plan = short_plan(token=6, cross_attention=1, unet=0)
    reference = train(tiny_backbone(tokenizer_folder), images, "dog", plan, seed=3, options=CPU)
    every_two = dataclasses.replace(CPU, checkpoint_every=2, checkpoint_minutes=0)
    store = run_store(tmp_path, tiny_backbone(tokenizer_folder), images, plan, seed=3)
    real_save = store.save

    def crash_at_step_five(stage, step, total, loss):
        if (stage, step) == ("token", 5):
            store.save = lambda state: (_ for _ in ()).throw(Killed())  # nothing more reaches the disk
            raise Killed

    with pytest.raises(Killed):
        train(tiny_backbone(tokenizer_folder), images, "dog", plan, seed=3, store=store, progress=crash_at_step_five, options=every_two)
    store.save = real_save
    assert store.position() == (0, 4) and store.reached() == (0, 5)
    again = train(tiny_backbone(tokenizer_folder), images, "dog", plan, seed=3, store=store, options=every_two)
    assert again.resumed_at == ("token", 4) and again.steps_lost == 1
    assert again.history == reference.history


def test_periodic_checkpoints_follow_the_clock(tokenizer_folder, images, tmp_path, monkeypatch):
    plan = short_plan(token=5, cross_attention=0, unet=0)
    clock = iter(range(0, 10_000, 40))  # every reading of the clock is 40 s after the last
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: next(clock))
    saved = []
    store = run_store(tmp_path, tiny_backbone(tokenizer_folder), images, plan, seed=1)
    real_save = store.save
    store.save = lambda state: (saved.append((state.stage_index, state.step)), real_save(state))
    train(
        tiny_backbone(tokenizer_folder), images, "dog", plan, seed=1, store=store, options=dataclasses.replace(CPU, checkpoint_minutes=1.0)
    )
    assert saved == [(0, 2), (0, 4), (1, 0), (2, 0), (3, 0)]  # one a minute inside the stage, then each stage end
    with pytest.raises(SteerError, match="checkpoint minutes"):
        RuntimeOptions(checkpoint_minutes=float("nan"))
