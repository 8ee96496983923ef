"""Loss nodes that need a model: CLIP text, CLIP image, CLIP style and image classifiers.

Hugging Face model folders live in ComfyUI's model folder "steer" (models/steer/ by default;
an `extra_model_paths.yaml` entry `steer: path/to/folders` adds more places). Image and style
losses also take the stock CLIP_VISION models users already have for IPAdapter.
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..errors import SteerError
from ..guidance.hf_models import PRECISIONS, folder_signature, list_model_folders, load_guidance_model, resolve_model_folder
from ..guidance.losses.classifier import OBJECTIVES, ClassifierLoss
from ..guidance.losses.clip import DISTANCES, CLIPImageLoss, CLIPStyleLoss, CLIPTextLoss, HFCLIPEncoder
from ..guidance.preprocess import FITS
from .comfy_clip_vision import ComfyCLIPVisionEncoder
from .comfy_common import image_to_bchw
from .regions import MODEL_LOSS_MASK, mask_input, with_region
from .schema import Choice, GuidanceModel, loss_output

CATEGORY = "Steer/losses"
MODEL_FOLDER = "steer"
NO_MODEL_FOLDERS = "(no model folders in models/steer)"


def model_loss_output(typical_weight: str) -> io.Output:
    return loss_output(f"Connect to a Steer guided sampler, or to Steer Combine Losses (typical weight there: {typical_weight}).")


def register_model_folder() -> None:
    """models/steer as ComfyUI model folder "steer".

    add_model_folder_path appends to an entry that extra_model_paths.yaml created before custom
    nodes were imported (its `steer:` paths stay first), or creates the entry.
    """
    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))


register_model_folder()


def model_roots() -> list[str]:
    return folder_paths.get_folder_paths(MODEL_FOLDER)


def fit_input() -> Choice:
    return Choice(
        "fit",
        FITS,
        default="stretch",
        tooltip="How the image is fitted to the model's square input. stretch: the whole image is scored, so every pixel is steered. "
        "center_crop: the model sees an undistorted centre crop, as in its training, but the borders are not steered.",
    )


def distance_input() -> Choice:
    return Choice(
        "distance",
        DISTANCES,
        default="spherical",
        tooltip="spherical: 2·arcsin(‖a−b‖/2)² on unit embeddings (diffusers' CLIP guidance). cosine: 1 − cos. "
        "Both are 0 for a perfect match.",
    )


def image_encoder_inputs() -> list[io.Input]:
    """The two optional sources of an image or style loss's encoder; image_encoder() checks that exactly one is connected."""
    return [
        GuidanceModel.Input(
            "guidance_model",
            optional=True,
            tooltip="A Hugging Face CLIP folder from Steer Load Guidance Model. Connect this or clip_vision, not both.",
        ),
        io.ClipVision.Input(
            "clip_vision",
            optional=True,
            tooltip="A stock CLIP_VISION model from Load CLIP Vision (e.g. the ViT-H/ViT-L image encoders IPAdapter uses). "
            "Connect this or guidance_model, not both.",
        ),
    ]


def image_encoder(guidance_model, clip_vision, fit: str):
    """The differentiable image encoder behind an image or style loss: exactly one source must be connected."""
    if guidance_model is not None and clip_vision is not None:
        raise SteerError("both guidance_model and clip_vision are connected; connect only one of them")
    if clip_vision is not None:
        return ComfyCLIPVisionEncoder(clip_vision, fit=fit)
    if guidance_model is not None:
        return HFCLIPEncoder(guidance_model, fit=fit)
    raise SteerError(
        "no model connected: connect guidance_model (a Hugging Face CLIP folder via Steer Load Guidance Model) "
        "or clip_vision (a stock Load CLIP Vision model)"
    )


class SteerLoadGuidanceModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerLoadGuidanceModel",
            display_name="Steer Load Guidance Model",
            category=CATEGORY,
            description="Loads a Hugging Face model folder from models/steer/ for the CLIP and classifier losses: a CLIP folder "
            "(e.g. openai/clip-vit-large-patch14) or any AutoModelForImageClassification folder. safetensors weights only; "
            "nothing is downloaded. A folder loads once and stays cached across prompts.",
            inputs=[
                # Listed again each time ComfyUI asks for the node's inputs, so new folders show after a page refresh.
                Choice(
                    "model_folder",
                    list_model_folders(model_roots()) or [NO_MODEL_FOLDERS],
                    tooltip="A folder under models/steer/ holding config.json, model.safetensors and preprocessor_config.json "
                    "(CLIP text also needs tokenizer.json or vocab.json + merges.txt). Copy a Hugging Face repository's files there.",
                ),
                Choice(
                    "precision",
                    PRECISIONS,
                    default="auto",
                    tooltip="auto: float16 on a GPU, float32 on the CPU. float32 gives the cleanest gradients; "
                    "float16/bfloat16 halve the memory.",
                ),
            ],
            outputs=[GuidanceModel.Output(display_name="guidance_model", tooltip="Connect to a Steer CLIP or classifier loss.")],
        )

    @classmethod
    def fingerprint_inputs(cls, model_folder, precision):
        # Re-run when the folder's files change; the loader's own cache then reloads them.
        try:
            return repr((folder_signature(resolve_model_folder(model_roots(), model_folder)), precision))
        except (SteerError, OSError):
            return float("nan")  # never equal: the node runs and reports the problem

    @classmethod
    def execute(cls, model_folder: str, precision: str) -> io.NodeOutput:
        roots = model_roots()
        if model_folder == NO_MODEL_FOLDERS:
            raise SteerError(
                f"no model folders found in {', '.join(roots)}. Create a sub-folder there per model holding a Hugging Face "
                "CLIP or image-classifier repository's files (config.json, model.safetensors, preprocessor_config.json, "
                "tokenizer files for CLIP), then refresh the page."
            )
        return io.NodeOutput(load_guidance_model(resolve_model_folder(roots, model_folder), precision))


class SteerCLIPTextLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerCLIPTextLoss",
            display_name="Steer CLIP Text Loss",
            category=CATEGORY,
            description="Steers toward a text prompt with a CLIP model, and away from an optional negative prompt: "
            "loss = d(image, prompt) − negative_weight·d(image, negative). The value is about 0.8–1.0 (spherical) "
            "and moves by only ~0.1 under guidance, so next to other losses in Steer Combine Losses give it a weight of about 2–10.",
            inputs=[
                GuidanceModel.Input(
                    "guidance_model",
                    tooltip="A full CLIP folder (text and vision towers, with tokenizer), e.g. openai/clip-vit-base-patch32 or "
                    "clip-vit-large-patch14.",
                ),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="",
                    tooltip="What the image should look like, e.g. 'golden hour light'. CLIP reads at most 77 tokens.",
                ),
                io.String.Input(
                    "negative_prompt",
                    multiline=True,
                    default="",
                    tooltip="Optional. What the image should move away from. Leave empty for none.",
                ),
                io.Float.Input(
                    "negative_weight",
                    default=0.5,
                    min=0.0,
                    max=10.0,
                    step=0.05,
                    tooltip="How hard the negative prompt pushes away, relative to the prompt's pull. 0.3–1 is typical.",
                ),
                distance_input(),
                fit_input(),
                mask_input(MODEL_LOSS_MASK),
            ],
            outputs=[model_loss_output("2–10")],
        )

    @classmethod
    def execute(cls, guidance_model, prompt, negative_prompt, negative_weight, distance, fit, mask=None) -> io.NodeOutput:
        encoder = HFCLIPEncoder(guidance_model, fit=fit)
        loss = CLIPTextLoss(encoder, prompt, negative_prompt=negative_prompt, negative_weight=negative_weight, distance=distance)
        return io.NodeOutput(with_region(loss, mask))


class SteerCLIPImageLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerCLIPImageLoss",
            display_name="Steer CLIP Image Loss",
            category=CATEGORY,
            description="Steers toward the CLIP embedding of a reference image (several images are averaged): same content and feel, "
            "not the same pixels. Works with a Hugging Face CLIP folder or a stock CLIP_VISION model. The value is 0 for the "
            "reference itself and about 0.4–0.7 for an unrelated photo; in Steer Combine Losses a weight of about 2–10 is typical.",
            inputs=[
                io.Image.Input("reference", tooltip="The image(s) to look like. A batch is averaged into one target."),
                distance_input(),
                fit_input(),
                *image_encoder_inputs(),
                mask_input(MODEL_LOSS_MASK),
            ],
            outputs=[model_loss_output("2–10")],
        )

    @classmethod
    def execute(cls, reference, distance, fit, guidance_model=None, clip_vision=None, mask=None) -> io.NodeOutput:
        encoder = image_encoder(guidance_model, clip_vision, fit)
        return io.NodeOutput(with_region(CLIPImageLoss(encoder, image_to_bchw(reference), distance=distance), mask))


class SteerStyleLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerStyleLoss",
            display_name="Steer Style Loss",
            category=CATEGORY,
            description="Steers toward a reference image's style, as FreeDoM and MPGD do: the Gram matrix of an early CLIP vision "
            "block's features, sample against reference. The value is ‖G − G_ref‖ / ‖G_ref‖: 0 for the reference's style, about 1 "
            "for an unrelated one; in Steer Combine Losses a weight of about 1–5 is typical. Works with a Hugging Face CLIP folder "
            "or a stock CLIP_VISION model. The 'paper' preset's random augmentation jitters colours, which Gram statistics see; "
            "if the style does not take, try 'freedom' or 'mpgd', the presets those papers used for style.",
            inputs=[
                io.Image.Input(
                    "reference", tooltip="The style reference, e.g. a painting. A batch is averaged into one target Gram matrix."
                ),
                io.Int.Input(
                    "block",
                    default=2,
                    min=0,
                    max=47,
                    tooltip="Which transformer block's output (0-based) gives the style features. FreeDoM and MPGD use 2 "
                    "(transformers' hidden_states[3]). Lower blocks capture colour and texture, higher ones more content. "
                    "Only blocks up to this one are computed.",
                ),
                fit_input(),
                *image_encoder_inputs(),
                mask_input(MODEL_LOSS_MASK),
            ],
            outputs=[model_loss_output("1–5")],
        )

    @classmethod
    def execute(cls, reference, block, fit, guidance_model=None, clip_vision=None, mask=None) -> io.NodeOutput:
        encoder = image_encoder(guidance_model, clip_vision, fit)
        return io.NodeOutput(with_region(CLIPStyleLoss(encoder, image_to_bchw(reference), block=block), mask))


class SteerClassifierLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerClassifierLoss",
            display_name="Steer Classifier Loss",
            category=CATEGORY,
            description="Steers toward one label of any Hugging Face image classifier (AutoModelForImageClassification): "
            "style, aesthetic or safety classifiers, ImageNet models. cross_entropy is about 0–7 (0 = certain), "
            "neg_probability is −1 to 0; in Steer Combine Losses a weight of about 0.5–2 (cross_entropy) or 2–10 (neg_probability) "
            "is typical.",
            inputs=[
                GuidanceModel.Input(
                    "guidance_model",
                    tooltip="An image-classifier folder (config.json lists an architecture ending in ForImageClassification).",
                ),
                io.String.Input(
                    "label",
                    default="",
                    tooltip="The class to steer toward: its name as in the model's config.json id2label (case-insensitive) or its "
                    "index. A wrong label lists the valid ones.",
                ),
                Choice(
                    "objective",
                    OBJECTIVES,
                    default="cross_entropy",
                    tooltip="cross_entropy: −log p(label), keeps pushing. neg_probability: −p(label), eases off once the label is likely. "
                    "neg_logit: −score, for one-output regression heads such as aesthetic scorers.",
                ),
                fit_input(),
                mask_input(MODEL_LOSS_MASK),
            ],
            outputs=[model_loss_output("0.5–2 for cross_entropy, 2–10 for neg_probability")],
        )

    @classmethod
    def execute(cls, guidance_model, label, objective, fit, mask=None) -> io.NodeOutput:
        if not str(label).strip():
            raise SteerError("the classifier loss needs a label: a class name from the model's id2label, or its index")
        return io.NodeOutput(with_region(ClassifierLoss(guidance_model, label, objective=objective, fit=fit), mask))


NODES = (SteerLoadGuidanceModel, SteerCLIPTextLoss, SteerCLIPImageLoss, SteerStyleLoss, SteerClassifierLoss)
