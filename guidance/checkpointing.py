"""Gradient checkpointing for modules that have no switch for it, on for the span of a `with` block.

ComfyUI's UNet and VAE have no checkpointing switch, so the forward of each chosen block is
replaced on the instance and restored afterwards (even on error). Under checkpointing a block keeps
only its inputs for backward and recomputes the rest; the weight copies comfy.ops makes for the
identity weight wrappers are recomputed too instead of being held until backward.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable

import torch
import torch.utils.checkpoint

from ..patching import patched_attributes


def checkpointed_forward(forward):
    """`forward` under non-reentrant gradient checkpointing. Dicts (ComfyUI's transformer_options,
    which the UNet keeps mutating) are copied so the recomputation sees the values of the forward."""

    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
        kwargs = {key: dict(value) if isinstance(value, dict) else value for key, value in kwargs.items()}
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def checkpointed(modules: Iterable[torch.nn.Module]):
    """(module, "forward", checkpointed forward) for each module: changes for `patching`."""
    return ((module, "forward", checkpointed_forward(module.forward)) for module in modules)


def blocks_of(root: torch.nn.Module, types: tuple[type, ...]) -> list[torch.nn.Module]:
    """Every submodule of `root` (root included) that is one of `types`, outermost only: a block
    inside a block is left alone, since nested checkpoints would recompute it twice."""
    found, taken = [], []
    for name, module in root.named_modules():
        if any(prefix == "" or name.startswith(prefix + ".") for prefix in taken):
            continue
        if isinstance(module, types):
            found.append(module)
            taken.append(name)
    return found


@contextmanager
def gradient_checkpointing(modules: Iterable[torch.nn.Module], enabled: bool = True):
    with patched_attributes(checkpointed(modules) if enabled else ()) as patch:
        yield len(patch)
