"""Training checkpoints under a crash in the middle of writing one: the next run never loads a torn
checkpoint; it takes the previous one whole."""

import pytest
import torch

from steer.personalize import checkpoint as checkpoint_module
from steer.personalize.checkpoint import CheckpointStore, TrainingState


class Killed(BaseException):
    pass


def state_at(step: int) -> TrainingState:
    return TrainingState(
        stage_index=1,
        step=step,
        history=[{"step": step}],
        seconds=float(step),
        weights={"token/token": torch.full((4,), float(step))},
        optimizer={"exp_avg/token": torch.full((4,), -float(step))},
    )


@pytest.mark.parametrize("killed_while_writing", ["weights", "optimizer", "progress"])
def test_a_checkpoint_killed_mid_write_leaves_the_previous_one_whole(tmp_path, monkeypatch, killed_while_writing):
    store = CheckpointStore(tmp_path, "fingerprint")
    store.save(state_at(10))
    real_safetensors, real_json = checkpoint_module.write_safetensors, checkpoint_module.write_json

    def safetensors(path, tensors, metadata=None):
        if path.name.startswith(killed_while_writing):
            path.with_name(f".{path.name}.x.tmp").write_bytes(b"\0" * 10)  # what a killed write leaves
            raise Killed
        real_safetensors(path, tensors, metadata)

    def json(path, data):
        if killed_while_writing == "progress" and path.name == "progress.json":
            raise Killed
        real_json(path, data)

    monkeypatch.setattr(checkpoint_module, "write_safetensors", safetensors)
    monkeypatch.setattr(checkpoint_module, "write_json", json)
    with pytest.raises(Killed):
        store.save(state_at(20))
    monkeypatch.undo()

    loaded = store.load()
    assert (loaded.stage_index, loaded.step, loaded.history) == (1, 10, [{"step": 10}])
    assert torch.equal(loaded.weights["token/token"], torch.full((4,), 10.0))
    assert torch.equal(loaded.optimizer["exp_avg/token"], torch.full((4,), -10.0))
    store.save(state_at(30))  # the next checkpoint sweeps away what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer-1-000030.safetensors", "progress.json", "weights-1-000030.safetensors"]
