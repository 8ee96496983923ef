"""The reward loss node: a scoring head (LAION aesthetic predictor and the like) on a CLIP image embedding.

Heads are single safetensors files anywhere under ComfyUI's "steer" model folder (models/steer/), outside
the Hugging Face model folders that live there too. `steer convert` turns a pickled .pth head into one.
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..errors import SteerError
from ..guidance.hf_models import CONFIG_FILE
from ..guidance.losses.reward import ACTIVATIONS, RewardLoss, load_reward_head
from ..safe_files import is_safetensors
from .model_loss_nodes import CATEGORY, MODEL_FOLDER, fit_input, image_encoder, image_encoder_inputs, model_loss_output
from .regions import MODEL_LOSS_MASK, mask_input, with_region
from .schema import Choice

NO_HEADS = "(no .safetensors heads in models/steer)"


def reward_heads() -> list[str]:
    """Relative names of the .safetensors files under models/steer that are not part of a model folder."""
    heads = []
    for name in folder_paths.get_filename_list(MODEL_FOLDER):
        path = folder_paths.get_full_path(MODEL_FOLDER, name)
        if name.lower().endswith(".safetensors") and path and not os.path.isfile(os.path.join(os.path.dirname(path), CONFIG_FILE)):
            heads.append(name)
    return heads


class SteerRewardLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerRewardLoss",
            display_name="Steer Reward Loss",
            category=CATEGORY,
            description="Steers toward a higher reward score: a small head (linear or MLP) on the normalised CLIP image embedding, "
            "as the LAION aesthetic predictor is built. loss = −score, so it keeps pushing; LAION aesthetic scores run about 1–10. "
            "Heads are .safetensors files in models/steer/ (convert a .pth with `steer convert`). The head must have been trained "
            "on the connected CLIP model (LAION aesthetic: ViT-L/14). In Steer Combine Losses a weight of about 0.5–2 is typical.",
            inputs=[
                Choice(
                    "head",
                    reward_heads() or [NO_HEADS],
                    tooltip="A reward head in models/steer/ (any sub-folder): Linear layers read in the order of the numbers in "
                    "their names, ending in one score. A .pth head must first go through `steer convert`.",
                ),
                Choice(
                    "activation",
                    ACTIVATIONS,
                    default="none",
                    tooltip="What runs between the head's layers. none: the LAION aesthetic predictor (Linear layers and dropouts "
                    "only). relu / gelu: heads trained with those; the file cannot say which, its source can.",
                ),
                fit_input(),
                *image_encoder_inputs(),
                mask_input(MODEL_LOSS_MASK),
            ],
            outputs=[model_loss_output("0.5–2")],
        )

    @classmethod
    def fingerprint_inputs(cls, head, activation, fit, guidance_model=None, clip_vision=None, mask=None):
        # Re-run when the head file is replaced; the other inputs are compared by ComfyUI itself.
        path = folder_paths.get_full_path(MODEL_FOLDER, head)
        try:
            return repr((path, os.path.getmtime(path), os.path.getsize(path))) if path else float("nan")
        except OSError:
            return float("nan")  # never equal: the node runs and reports the problem

    @classmethod
    def execute(cls, head, activation, fit, guidance_model=None, clip_vision=None, mask=None) -> io.NodeOutput:
        if head == NO_HEADS:
            roots = folder_paths.get_folder_paths(MODEL_FOLDER)
            raise SteerError(
                f"no reward heads found in {', '.join(roots)}. Put a head's .safetensors file there (a .pth head: run "
                "`steer convert head.pth`), then refresh the page."
            )
        path = folder_paths.get_full_path(MODEL_FOLDER, head)
        if path is None or not is_safetensors(path):
            raise SteerError(f"reward head {head!r} is not a .safetensors file in models/steer; pick one from the list after a refresh")
        encoder = image_encoder(guidance_model, clip_vision, fit)
        return io.NodeOutput(with_region(RewardLoss(encoder, load_reward_head(path, activation)), mask))


NODES = (SteerRewardLoss,)
