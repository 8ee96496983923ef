"""What the Steer node declarations share, on ComfyUI's V3 node schema (comfy_api.latest, v0.3.64).

The pack's own socket types are declared here once, with the inputs and outputs several nodes take.
Node ids, input names, types, defaults and output order are published: workflows depend on them, and
tests/integration/test_object_info_stable.py compares every node's /object_info with the V1 original.
"""

from __future__ import annotations

from typing import Iterable

from comfy_api.latest import io

Loss = io.Custom("STEER_LOSS")
Trace = io.Custom("STEER_TRACE")
GuidanceModel = io.Custom("STEER_GUIDANCE_MODEL")


class Choice(io.Combo.Input):
    """A combo whose published type is its list of options, as a V1 node publishes it.

    ComfyUI v0.3.64 checks a combo value against its options only when the input's type is that list
    (execution.validate_inputs); with io.Combo's type "COMBO" a misspelt preset would pass validation
    and fail only when the node runs. io.Combo.Output does the same for its type.
    """

    def __init__(self, id: str, options: Iterable[str], **kwargs):
        super().__init__(id, options=list(options), **kwargs)

    def get_io_type(self):
        return self.options


def fraction(id: str, default: float, tooltip: str, optional: bool = False) -> io.Float.Input:
    """A position in the sampling schedule, as a fraction of the steps (0 = first step, 1 = after the last)."""
    return io.Float.Input(id, default=default, min=0.0, max=1.0, step=0.01, tooltip=tooltip, optional=optional)


def loss_output(tooltip: str = "Connect to a Steer guided sampler, or to Steer Combine Losses.") -> io.Output:
    return Loss.Output(display_name="loss", tooltip=tooltip)


def gradient_checkpointing(tooltip: str, optional: bool = True) -> io.Boolean.Input:
    return io.Boolean.Input("gradient_checkpointing", default=True, tooltip=tooltip, optional=optional)
