"""Files, safely: never half-written, never unpickled.

Writing: each file goes to a temporary file in its own folder, is flushed to disk, and is then
renamed over the target (os.replace is atomic on one filesystem). `StagedFiles` prepares several
files completely before renaming any, so a failure while writing (disk full, bad tensor) leaves
none of them behind.

Reading: Steer loads safetensors only. Loading a pickle file (.ckpt, .pt, .bin...) can run
arbitrary code, so the loaders name these suffixes in their errors instead of opening them.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are written: `steer --help` should not load it
    import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


def is_safetensors(name: str | Path) -> bool:
    return str(name).lower().endswith(SAFETENSORS_SUFFIXES)


def is_pickle(name: str | Path) -> bool:
    return str(name).lower().endswith(PICKLE_SUFFIXES)


class StagedFiles:
    def __init__(self):
        self._pending: list[tuple[Path, Path]] = []  # (temporary, target)

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

    def json(self, path: Path, data) -> None:
        self._temporary(Path(path)).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")

    def commit(self) -> None:
        for temporary, _ in self._pending:
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


def write_json(path: Path, data) -> None:
    with StagedFiles() as files:
        files.json(path, data)
