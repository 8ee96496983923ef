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
