"""Gradient checkpointing for modules that have no switch for it, on for the span of a `with` block;
and backward passes through blocks that add residuals in place.

ComfyUI's models and VAEs have no checkpointing switch, so the forward of each chosen block is
replaced on the instance and restored afterwards (even on error). Under checkpointing a block keeps
only its inputs for backward and recomputes the rest; the weight copies comfy.ops makes for the
identity weight wrappers are recomputed too instead of being held until backward.

Some blocks add residuals in place (ComfyUI's Flux blocks: `txt += ...`, `x += ...`) into tensors
their norms saved for backward. Plain autograd refuses that, and so does checkpointing when the tensor
changed is the block's input; when it is not, checkpointing is worse: the recomputation captures the
saved tensors by reference, the in-place add then changes them, and the gradient comes out wrong
without any error. `in_place_safe` runs such a block on copies of its inputs
and makes autograd keep a copy of every tensor it saves, composed with an enclosing saved-tensor hook
(checkpointing's), so both plain and checkpointed backward passes give the out-of-place gradient.
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


def _current_saved_tensor_hooks():
    """The innermost saved-tensor hooks (pack, unpack) in force, or None. torch has no public way to ask."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    if top is None:
        raise RuntimeError("this torch has no torch._C._autograd._top_saved_tensors_default_hooks; in-place blocks cannot be made safe")
    try:
        return top(False)
    except TypeError:  # older torch: no ignore_is_tracing argument
        return top()


@contextmanager
def saved_tensor_copies():
    """Autograd keeps a copy of each tensor it saves in this scope, handed to the enclosing hooks if any."""
    outer = _current_saved_tensor_hooks()
    if outer is None:
        pack, unpack = (lambda tensor: tensor.clone()), (lambda saved: saved)
    else:
        outer_pack, outer_unpack = outer
        pack, unpack = (lambda tensor: outer_pack(tensor.clone())), outer_unpack
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


def in_place_safe(forward):
    """`forward` on copies of its tensor inputs, with saved_tensor_copies (see the module docstring)."""

    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in kwargs.items()}
        with saved_tensor_copies():
            return forward(*args, **kwargs)

    return run


def block_changes(checkpoint: Iterable[torch.nn.Module], in_place: Iterable[torch.nn.Module] = ()):
    """(module, "forward", new forward) for `patching`: each in-place block made safe, each block in
    `checkpoint` checkpointed (outside the safety wrapper, so the recomputation is safe too)."""
    checkpoint, in_place = list(checkpoint), list(in_place)
    checkpointed_ids, in_place_ids = {id(m) for m in checkpoint}, {id(m) for m in in_place}
    seen = set()
    for module in checkpoint + in_place:
        if id(module) in seen:
            continue
        seen.add(id(module))
        forward = module.forward
        if id(module) in in_place_ids:
            forward = in_place_safe(forward)
        if id(module) in checkpointed_ids:
            forward = checkpointed_forward(forward)
        yield module, "forward", forward


def checkpointed(modules: Iterable[torch.nn.Module]):
    """(module, "forward", checkpointed forward) for each module: changes for `patching`."""
    return block_changes(modules)


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
def gradient_checkpointing(modules: Iterable[torch.nn.Module], enabled: bool = True, in_place: Iterable[torch.nn.Module] = ()):
    """Checkpoints `modules` when enabled; makes the `in_place` blocks safe for backward either way."""
    with patched_attributes(block_changes(modules if enabled else (), in_place)) as patch:
        yield len(patch)
