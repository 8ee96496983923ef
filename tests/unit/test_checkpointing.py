"""guidance/checkpointing.py: blocks recompute in backward while on, same gradients, restored after."""

import pytest
import torch
from torch import nn

from steer.guidance.checkpointing import blocks_of, gradient_checkpointing


class Counted(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.calls = 0

    def forward(self, x, options=None):
        self.calls += 1
        if options is not None:
            options["seen"] = options.get("seen", 0) + 1
        return torch.tanh(self.linear(x))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(Counted(8), nn.Sequential(Counted(8), Counted(8)))


def _grad(net, x):
    x = x.clone().requires_grad_(True)
    net(x).square().sum().backward()
    return x.grad


def test_checkpointed_blocks_recompute_in_backward_and_give_the_same_gradient():
    net, x = _net(), torch.randn(3, 8)
    expected = _grad(net, x)
    blocks = blocks_of(net, (Counted,))
    assert len(blocks) == 3
    for block in blocks:
        block.calls = 0
    with gradient_checkpointing(blocks) as count:
        assert count == 3
        got = _grad(net, x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert [block.calls for block in blocks] == [2, 2, 2]  # forward, then again in backward


def test_forwards_are_restored_after_the_block_even_on_error():
    net = _net()
    blocks = blocks_of(net, (Counted,))
    with pytest.raises(RuntimeError):
        with gradient_checkpointing(blocks):
            assert all("forward" in block.__dict__ for block in blocks)
            raise RuntimeError("boom")
    assert all("forward" not in block.__dict__ for block in blocks)
    for block in blocks:
        block.calls = 0
    _grad(net, torch.randn(2, 8))
    assert [block.calls for block in blocks] == [1, 1, 1]


def test_no_grad_runs_the_plain_forward_and_disabled_patches_nothing():
    net = _net()
    blocks = blocks_of(net, (Counted,))
    with gradient_checkpointing(blocks, enabled=False) as count:
        assert count == 0 and all("forward" not in block.__dict__ for block in blocks)
    with gradient_checkpointing(blocks), torch.no_grad():
        net(torch.randn(2, 8))
    assert [block.calls for block in blocks] == [1, 1, 1]


def test_outermost_blocks_only_and_dict_arguments_are_copied_for_recomputation():
    outer = nn.Sequential(Counted(4))
    assert blocks_of(nn.ModuleList([outer]), (nn.Sequential,)) == [outer]  # not the Sequential inside it
    assert blocks_of(outer, (nn.Sequential,)) == [outer]  # the root counts too
    block = Counted(4)
    options = {}
    with gradient_checkpointing([block]):
        x = torch.randn(2, 4, requires_grad=True)
        block(x, options).sum().backward()
    # the block saw a copy of the dict both times; the caller's dict is not mutated twice
    assert options == {}


class AddsInPlace(nn.Module):
    """Like ComfyUI's Flux single-stream block: a norm saves the input, then the residual is added into it in place."""

    def __init__(self, width, in_place=True):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.linear = nn.Linear(width, width)
        self.in_place = in_place

    def forward(self, x, scale):
        update = torch.tanh(self.linear(self.norm(x))) * scale
        if self.in_place:
            x += update
            x += self.norm(x)  # a norm after the in-place add saves the changed tensor: the case that fools checkpointing
            return x
        x = x + update
        return x + self.norm(x)


def _in_place_grad(block, x, scale):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(block(x * 1.0, scale=scale).square().sum(), x)
    return grad


def test_in_place_blocks_give_the_out_of_place_gradient_with_and_without_checkpointing():
    torch.manual_seed(0)
    block, reference = AddsInPlace(8), AddsInPlace(8, in_place=False)
    reference.load_state_dict(block.state_dict())
    x, scale = torch.randn(2, 4, 8), torch.randn(8)
    expected = _in_place_grad(reference, x, scale)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _in_place_grad(block, x, scale)
    with gradient_checkpointing([block]), pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _in_place_grad(block, x, scale)  # checkpointing alone does not help
    for checkpoint in (False, True):
        with gradient_checkpointing([block], enabled=checkpoint, in_place=[block]):
            assert torch.allclose(_in_place_grad(block, x, scale), expected, atol=1e-6), checkpoint
    assert "forward" not in vars(block)  # restored


class CopiesThenAddsInPlace(AddsInPlace):
    def forward(self, x, scale):
        return super().forward(x * 1.0, scale)


def test_checkpointing_alone_would_get_an_in_place_block_silently_wrong():
    """Why in_place_safe exists: when the tensor changed in place is not the block's input, a checkpointed
    recomputation captures it by reference before the add, and the gradient is wrong without any error."""
    torch.manual_seed(0)
    block, reference = CopiesThenAddsInPlace(8), AddsInPlace(8, in_place=False)
    reference.load_state_dict(block.state_dict())
    x, scale = torch.randn(2, 4, 8), torch.randn(8)
    expected = _in_place_grad(reference, x, scale)
    with gradient_checkpointing([block]):
        assert not torch.allclose(_in_place_grad(block, x, scale), expected, atol=1e-3)
    with gradient_checkpointing([block], in_place=[block]):
        assert torch.allclose(_in_place_grad(block, x, scale), expected, atol=1e-6)
