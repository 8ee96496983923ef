"""`steer convert`: pickled state dicts become safetensors; anything that could run code, or is not a plain state dict, is refused."""

import collections
import os

import torch

from steer.cli.main import main
from steer.safe_files import read_safetensors


class Payload:
    """A pickled object whose unpickling would run code (os.system) if the loader allowed classes."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/steer-convert-ran",))


def test_a_plain_state_dict_converts_to_the_same_tensors(tmp_path, capsys):
    weight = torch.randn(4, 8)
    state = collections.OrderedDict({"layers.0.weight": weight, "layers.0.bias": torch.zeros(4), "view": weight[:, :2]})
    torch.save(state, tmp_path / "head.pth")
    assert main(["convert", str(tmp_path / "head.pth")]) == 0
    assert "wrote" in capsys.readouterr().out
    tensors, metadata = read_safetensors(tmp_path / "head.safetensors")
    assert set(tensors) == set(state) and all(torch.equal(tensors[k], state[k]) for k in state)
    assert metadata == {"steer_converted_from": "head.pth"}


def test_a_file_that_would_run_code_is_refused_and_nothing_is_written(tmp_path, capsys):
    torch.save({"weight": torch.zeros(2), "trap": Payload()}, tmp_path / "evil.pt")
    assert main(["convert", str(tmp_path / "evil.pt")]) == 2
    assert "holds more than tensors" in capsys.readouterr().err
    assert not (tmp_path / "evil.safetensors").exists() and not os.path.exists("/tmp/steer-convert-ran")


def test_anything_but_named_tensors_is_refused_with_what_was_found(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, tmp_path / "checkpoint.ckpt")
    assert main(["convert", str(tmp_path / "checkpoint.ckpt")]) == 2
    error = capsys.readouterr().err
    assert "not a plain state dict" in error and "'epoch' (int)" in error and "'state_dict' (dict)" in error
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    assert main(["convert", str(tmp_path / "list.pt")]) == 2
    assert "holds a list, not a state dict" in capsys.readouterr().err
    (tmp_path / "broken.pth").write_bytes(b"not a torch file")
    assert main(["convert", str(tmp_path / "broken.pth")]) == 2
    assert "could not be read as a PyTorch weight file" in capsys.readouterr().err


def test_outputs_are_never_overwritten_unless_asked_and_odd_paths_are_refused(tmp_path, capsys):
    torch.save({"w": torch.ones(3)}, tmp_path / "head.pth")
    (tmp_path / "head.safetensors").write_bytes(b"keep me")
    assert main(["convert", str(tmp_path / "head.pth")]) == 2
    assert "exists; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "head.safetensors").read_bytes() == b"keep me"
    assert main(["convert", str(tmp_path / "head.pth"), "--overwrite"]) == 0
    assert torch.equal(read_safetensors(tmp_path / "head.safetensors")[0]["w"], torch.ones(3))
    assert main(["convert", str(tmp_path / "head.pth"), "--out", str(tmp_path / "head.pt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "head.safetensors"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "already safetensors" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pth")]) == 2
    assert "is not a file" in capsys.readouterr().err
