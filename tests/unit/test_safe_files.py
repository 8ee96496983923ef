"""safe_files: checked safetensors reading and plain file names."""

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from steer.errors import SteerError
from steer.safe_files import file_in_folder, read_safetensors, safetensors_header


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"w": torch.arange(6, dtype=torch.float32).view(2, 3)}, str(path), metadata={"kind": "test"})
    return path


def test_a_good_file_reads_back_with_its_metadata(good):
    tensors, metadata = read_safetensors(good)
    assert torch.equal(tensors["w"], torch.arange(6, dtype=torch.float32).view(2, 3)) and metadata == {"kind": "test"}


def _header_file(path, header: dict, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("empty", "shorter than a header"),
        ("truncated", "claims bytes"),
        ("random", "header claims"),
        ("not_json", "not JSON"),
        ("absurd", "claims bytes"),
        ("bad_dtype", "no valid dtype"),
    ],
)
def test_a_damaged_file_is_a_steer_error_that_names_it(tmp_path, good, damage, reason):
    path = tmp_path / f"{damage}.safetensors"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(good.read_bytes()[:-5])
    elif damage == "random":
        path.write_bytes(os.urandom(4096))  # its first 8 bytes claim a header longer than the file (all but surely)
    elif damage == "not_json":
        path.write_bytes(struct.pack("<Q", 4) + b"\x00\x01\x02\x03")
    elif damage == "absurd":  # 10^12 floats claimed in a 16-byte file: refused before any allocation
        _header_file(path, {"w": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 4 * 10**12]}}, b"\0" * 16)
    else:
        _header_file(path, {"w": {"dtype": "F33", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16)
    with pytest.raises(SteerError, match=reason) as error:
        read_safetensors(path)
    assert path.name in str(error.value) and "corrupt" in str(error.value)


def test_the_header_check_accepts_what_safetensors_writes(tmp_path):
    path = tmp_path / "many.safetensors"
    save_file({"a": torch.zeros(3, dtype=torch.float16), "b": torch.ones(2, 2, dtype=torch.int64), "c": torch.zeros(0)}, str(path))
    assert set(safetensors_header(path)) >= {"a", "b", "c"}


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/file.safetensors", "..", "", "a\\b", None, 3])
def test_a_file_name_with_path_parts_is_refused(tmp_path, name):
    with pytest.raises(SteerError, match="not a plain file name"):
        file_in_folder(tmp_path, name, "concept.json")


def test_a_plain_file_name_stays_in_its_folder(tmp_path):
    assert file_in_folder(tmp_path, "my_dog.safetensors", "concept.json") == tmp_path / "my_dog.safetensors"
