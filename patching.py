"""Scoped instance-attribute patches: set attributes on objects, then put back exactly what was
there (including "nothing on the instance, the class's own"), in reverse order, even on error.

ComfyUI's modules have no switch for what Steer needs (checkpointing, out-of-place CLIP layers,
re-materialised weights), so the adapters patch instances, never classes, and only in scope.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable

_ABSENT = object()  # the instance had no attribute of its own


class AttributePatch:
    """Patches applied by `apply`, undone by `restore` (for scopes longer than a `with` block)."""

    def __init__(self):
        self._saved: list[tuple[object, str, Any]] = []

    def __len__(self) -> int:
        return len(self._saved)

    def apply(self, changes: Iterable[tuple[object, str, Any]]) -> "AttributePatch":
        """Sets each (target, name, value); a failure part-way leaves what was set recorded for `restore`."""
        for target, name, value in changes:
            self._saved.append((target, name, target.__dict__.get(name, _ABSENT)))
            setattr(target, name, value)
        return self

    def restore(self) -> None:
        while self._saved:
            target, name, previous = self._saved.pop()
            if previous is _ABSENT:
                target.__dict__.pop(name, None)
            else:
                setattr(target, name, previous)


@contextmanager
def patched_attributes(changes: Iterable[tuple[object, str, Any]]):
    """`with patched_attributes((obj, "name", value) for ...) as patch:` sets them for the block."""
    patch = AttributePatch()
    try:
        yield patch.apply(changes)
    finally:
        patch.restore()
