"""Files, safely: never half-written, never unpickled.

Writing: each file goes to a temporary file in its own folder, is flushed to disk, and is then
renamed over the target (os.replace is atomic on one filesystem). `StagedFiles` prepares several
files completely before renaming any, so a failure while writing (disk full, bad tensor) leaves
none of them behind.

Reading: Steer loads safetensors only. Loading a pickle file (.ckpt, .pt, .bin...) can run
arbitrary code, so the loaders name these suffixes in their errors instead of opening them.
`read_safetensors` checks a file's header against its size before anything is allocated, so a
truncated, empty or corrupt file, or one claiming absurd sizes, is a SteerError naming it.
`file_in_folder` reads a file name found inside one of our files (a concept JSON) as a plain name
inside its own folder, never as a path.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SteerError

if TYPE_CHECKING:  # torch is imported where tensors are written: `steer --help` should not load it
    import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


def is_safetensors(name: str | Path) -> bool:
    return str(name).lower().endswith(SAFETENSORS_SUFFIXES)


def is_pickle(name: str | Path) -> bool:
    return str(name).lower().endswith(PICKLE_SUFFIXES)


# Bytes per element of each safetensors dtype.
_DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit


def safetensors_header(path: str | Path) -> dict:
    """The header of a safetensors file (tensor entries and "__metadata__"), checked against the
    file's size: every tensor must lie inside the file and be exactly as large as its shape says."""
    path = Path(path)

    def corrupt(reason: str) -> SteerError:
        return SteerError(
            f"{path} is not a readable safetensors file ({reason}); it is truncated or corrupt: download, export or train it again"
        )

    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise corrupt(f"{size} bytes, shorter than a header")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(size - 8, _MAX_HEADER_BYTES):
                raise corrupt(f"its header claims {length} bytes, the file has {size}")
            header = json.loads(file.read(length))
    except OSError as error:
        raise SteerError(f"cannot read {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise corrupt("its header is not JSON") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a table of tensors")
    data_bytes = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in entry["data_offsets"])
            count = 1
            for dimension in entry["shape"]:
                count *= int(dimension)
            expected = count * _DTYPE_SIZES[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise corrupt(f"tensor {name!r} has no valid dtype, shape and offsets") from None
        if not 0 <= begin <= end <= data_bytes or end - begin != expected:
            raise corrupt(f"tensor {name!r} claims bytes {begin}-{end} of {data_bytes} ({expected} for its shape)")
    return header


def read_safetensors(path: str | Path, device: str = "cpu") -> tuple[dict, dict]:
    """(tensors, metadata) of a checked safetensors file."""
    from safetensors.torch import load_file

    header = safetensors_header(path)
    return load_file(str(path), device=device), dict(header.get("__metadata__") or {})


def file_in_folder(folder: str | Path, name, what: str) -> Path:
    """`folder / name` for a file name read from one of our files, refusing anything but a plain
    name (no folders, no "..", no drive or root) so a file can never point outside its folder."""
    if not isinstance(name, str) or not name or name in (".", "..") or name != Path(name).name or "\\" in name or "\0" in name:
        raise SteerError(
            f"{what} names the file {name!r}, which is not a plain file name in {folder}; fix or re-export the file that names it"
        )
    return Path(folder) / name


class StagedFiles:
    def __init__(self, durable: bool = True):
        self._pending: list[tuple[Path, Path]] = []  # (temporary, target)
        # durable=False skips the flush to disk: still never half-written, but a power cut may lose it.
        self._durable = durable

    def __enter__(self) -> "StagedFiles":
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.commit()
        else:
            self.discard()

    def _temporary(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        self._pending.append((Path(temporary), path))
        return Path(temporary)

    def safetensors(self, path: Path, tensors: "dict[str, torch.Tensor]", metadata: dict[str, str] | None = None) -> None:
        from safetensors.torch import save_file

        tensors = {key: value.detach().contiguous().cpu() for key, value in tensors.items()}
        save_file(tensors, str(self._temporary(Path(path))), metadata=metadata)

    def bytes(self, path: Path, data: bytes) -> None:
        self._temporary(Path(path)).write_bytes(data)

    def json(self, path: Path, data) -> None:
        self._temporary(Path(path)).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")

    def commit(self) -> None:
        for temporary, _ in self._pending if self._durable else ():
            with open(temporary, "rb+") as written:
                os.fsync(written.fileno())
        for temporary, target in self._pending:
            os.replace(temporary, target)
        self._pending.clear()

    def discard(self) -> None:
        for temporary, _ in self._pending:
            temporary.unlink(missing_ok=True)
        self._pending.clear()


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    with StagedFiles() as files:
        files.safetensors(path, tensors, metadata)


def write_json(path: Path, data, durable: bool = True) -> None:
    with StagedFiles(durable) as files:
        files.json(path, data)
