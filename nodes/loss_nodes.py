"""Loss nodes that need no extra model: colour, edges, and a weighted combination."""

from __future__ import annotations

import re

from comfy_api.latest import io

from ..errors import SteerError
from ..guidance.losses.base import Window
from ..guidance.losses.color import COLOR_MATCHES, ReferenceColorLoss, TargetColorLoss
from ..guidance.losses.combine import CombinedLoss, LossTerm
from ..guidance.losses.edge import EdgeLoss
from .comfy_common import image_to_bchw
from .regions import PIXEL_LOSS_MASK, mask_input, with_region
from .schema import Choice, Loss, fraction, loss_output

CATEGORY = "Steer/losses"
COMBINE_SLOTS = 4


def parse_hex_color(text: str) -> tuple[float, float, float]:
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})", text.strip())
    if match is None:
        raise SteerError(f"colour {text!r} is not a hex colour; write it like #ff0000 (red) or #3366cc")
    value = match.group(1)
    return tuple(int(value[i : i + 2], 16) / 255.0 for i in (0, 2, 4))


class SteerColorLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerColorLoss",
            display_name="Steer Colour Loss",
            category=CATEGORY,
            description="Steers toward a colour: a target colour, or (when a reference image is connected) the reference's colour "
            "statistics. Needs no model.",
            inputs=[
                io.String.Input(
                    "color", default="#ff0000", tooltip="Target colour as hex, e.g. #ff0000. Ignored when a reference image is connected."
                ),
                Choice(
                    "match",
                    COLOR_MATCHES,
                    default="pixels",
                    tooltip="pixels: every pixel toward the colour (strong tint). average: only the image's mean colour (keeps contrast).",
                ),
                io.Image.Input(
                    "reference",
                    optional=True,
                    tooltip="Optional. Match this image's per-channel colour mean and spread instead of a single colour.",
                ),
                mask_input(PIXEL_LOSS_MASK),
            ],
            outputs=[loss_output()],
        )

    @classmethod
    def execute(cls, color: str, match: str, reference=None, mask=None) -> io.NodeOutput:
        if reference is not None:
            return io.NodeOutput(with_region(ReferenceColorLoss(image_to_bchw(reference)), mask))
        return io.NodeOutput(with_region(TargetColorLoss(parse_hex_color(color), match=match), mask))


class SteerEdgeLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerEdgeLoss",
            display_name="Steer Edge Loss",
            category=CATEGORY,
            description="Steers the structure toward a reference image's edges (Sobel edge maps via kornia, compared at the sample's "
            "size). Needs no model.",
            inputs=[
                io.Image.Input(
                    "reference", tooltip="The image whose edges the result should follow. Several images are averaged into one edge map."
                ),
                mask_input(PIXEL_LOSS_MASK),
            ],
            outputs=[loss_output()],
        )

    @classmethod
    def execute(cls, reference, mask=None) -> io.NodeOutput:
        return io.NodeOutput(with_region(EdgeLoss(image_to_bchw(reference)), mask))


def combine_slot_inputs(slot: int) -> list[io.Input]:
    """Loss `slot` of Steer Combine Losses: the loss, its weight and its part of the schedule (all optional)."""
    return [
        Loss.Input(f"loss_{slot}", optional=True, tooltip=f"Loss {slot}. Unconnected slots are ignored."),
        io.Float.Input(
            f"weight_{slot}",
            default=1.0,
            min=-100.0,
            max=100.0,
            step=0.05,
            optional=True,
            tooltip=f"Weight of loss {slot}. Losses have different scales; balance them here.",
        ),
        fraction(f"start_{slot}", 0.0, f"Loss {slot} is active from this fraction of the steps...", optional=True),
        fraction(f"end_{slot}", 1.0, "...until this fraction of the steps.", optional=True),
    ]


class SteerCombineLosses(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerCombineLosses",
            display_name="Steer Combine Losses",
            category=CATEGORY,
            description="A weighted sum of up to four losses, each active only in its own part of the schedule (start/end as "
            "fractions of the steps). Losses with masks keep them: region A can go red while region B takes a reference's style.",
            inputs=[spec for slot in range(1, COMBINE_SLOTS + 1) for spec in combine_slot_inputs(slot)],
            outputs=[loss_output("The combined loss, for a Steer guided sampler or another Combine node.")],
        )

    @classmethod
    def execute(cls, **inputs) -> io.NodeOutput:
        terms = []
        for slot in range(1, COMBINE_SLOTS + 1):
            loss = inputs.get(f"loss_{slot}")
            if loss is None:
                continue
            window = Window(inputs.get(f"start_{slot}", 0.0), inputs.get(f"end_{slot}", 1.0))
            terms.append(LossTerm(loss, inputs.get(f"weight_{slot}", 1.0), window))
        if not terms:
            raise SteerError("Steer Combine Losses has no loss connected; connect at least loss_1")
        return io.NodeOutput(CombinedLoss(terms))


NODES = (SteerColorLoss, SteerEdgeLoss, SteerCombineLosses)
