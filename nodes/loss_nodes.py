"""Loss nodes that need no extra model: colour, edges, and a weighted combination."""
from __future__ import annotations

import re

import torch

from ..errors import SteerError
from ..guidance.losses.base import Window
from ..guidance.losses.color import COLOR_MATCHES, ReferenceColorLoss, TargetColorLoss
from ..guidance.losses.combine import CombinedLoss, LossTerm
from ..guidance.losses.edge import EdgeLoss
from .comfy_common import image_to_bchw

CATEGORY = "Steer/losses"
COMBINE_SLOTS = 4


def parse_hex_color(text: str) -> tuple[float, float, float]:
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})", text.strip())
    if match is None:
        raise SteerError(f"colour {text!r} is not a hex colour; write it like #ff0000 (red) or #3366cc")
    value = match.group(1)
    return tuple(int(value[i : i + 2], 16) / 255.0 for i in (0, 2, 4))


class SteerColorLoss:
    DESCRIPTION = "Steers toward a colour: a target colour, or (when a reference image is connected) the reference's colour statistics. Needs no model."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STEER_LOSS",)
    RETURN_NAMES = ("loss",)
    OUTPUT_TOOLTIPS = ("Connect to a Steer guided sampler, or to Steer Combine Losses.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "color": ("STRING", {"default": "#ff0000", "tooltip": "Target colour as hex, e.g. #ff0000. Ignored when a reference image is connected."}),
                "match": (
                    list(COLOR_MATCHES),
                    {"default": "pixels", "tooltip": "pixels: every pixel toward the colour (strong tint). average: only the image's mean colour (keeps contrast)."},
                ),
            },
            "optional": {
                "reference": ("IMAGE", {"tooltip": "Optional. Match this image's per-channel colour mean and spread instead of a single colour."}),
            },
        }

    def build(self, color: str, match: str, reference=None):
        if reference is not None:
            return (ReferenceColorLoss(image_to_bchw(reference)),)
        return (TargetColorLoss(parse_hex_color(color), match=match),)


class SteerEdgeLoss:
    DESCRIPTION = "Steers the structure toward a reference image's edges (Sobel edge maps via kornia, compared at the sample's size). Needs no model."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STEER_LOSS",)
    RETURN_NAMES = ("loss",)
    OUTPUT_TOOLTIPS = ("Connect to a Steer guided sampler, or to Steer Combine Losses.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reference": ("IMAGE", {"tooltip": "The image whose edges the result should follow. Several images are averaged into one edge map."}),
            }
        }

    def build(self, reference):
        return (EdgeLoss(image_to_bchw(reference)),)


class SteerCombineLosses:
    DESCRIPTION = "A weighted sum of up to four losses, each active only in its own part of the schedule (start/end as fractions of the steps)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STEER_LOSS",)
    RETURN_NAMES = ("loss",)
    OUTPUT_TOOLTIPS = ("The combined loss, for a Steer guided sampler or another Combine node.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        optional = {}
        for slot in range(1, COMBINE_SLOTS + 1):
            optional[f"loss_{slot}"] = ("STEER_LOSS", {"tooltip": f"Loss {slot}. Unconnected slots are ignored."})
            optional[f"weight_{slot}"] = ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.05, "tooltip": f"Weight of loss {slot}. Losses have different scales; balance them here."})
            optional[f"start_{slot}"] = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": f"Loss {slot} is active from this fraction of the steps..."})
            optional[f"end_{slot}"] = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": f"...until this fraction of the steps."})
        return {"required": {}, "optional": optional}

    def build(self, **inputs):
        terms = []
        for slot in range(1, COMBINE_SLOTS + 1):
            loss = inputs.get(f"loss_{slot}")
            if loss is None:
                continue
            window = Window(inputs.get(f"start_{slot}", 0.0), inputs.get(f"end_{slot}", 1.0))
            terms.append(LossTerm(loss, inputs.get(f"weight_{slot}", 1.0), window))
        if not terms:
            raise SteerError("Steer Combine Losses has no loss connected; connect at least loss_1")
        return (CombinedLoss(terms),)


NODE_CLASS_MAPPINGS = {
    "SteerColorLoss": SteerColorLoss,
    "SteerEdgeLoss": SteerEdgeLoss,
    "SteerCombineLosses": SteerCombineLosses,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SteerColorLoss": "Steer Colour Loss",
    "SteerEdgeLoss": "Steer Edge Loss",
    "SteerCombineLosses": "Steer Combine Losses",
}
