"""Guided sampler nodes. They read inputs, build a GuidanceConfig and hand over to the engine."""
from __future__ import annotations

import torch

from ..guidance.augment import AugmentConfig
from ..guidance.config import DEFAULT_PRESET, GRADIENT_PATHS, CFG_GRADIENTS, PRESETS, GuidanceConfig, TimeTravel
from ..guidance.config import preset as preset_config
from ..guidance.losses.base import Window
from ..guidance.plot import plot_trace
from ..guidance.step_rules import STEP_RULES
from ..guidance.trace import GuidanceTrace
from .comfy_guidance import LOSS_DECODERS, make_sampler

CATEGORY = "Steer/sampling"

VAE_INPUT = ("VAE", {"tooltip": "The VAE that matches the model. Guided steps decode x̂0 with it (keeping gradients) to score the loss."})
LOSS_INPUT = ("STEER_LOSS", {"tooltip": "What to steer toward: a Steer loss node (colour, edges, CLIP, classifier, or a combination)."})
TRACE_TOOLTIP = "A record of what the guidance did (per-step loss, gradient norm, step size), filled in when the sampler runs. Connect it to Steer Guidance Report."


LOSS_DECODER_INPUT = (
    list(LOSS_DECODERS),
    {
        "default": "vae",
        "tooltip": "What decodes x̂0 for the loss. vae: the connected VAE (exact). taesd: the tiny TAESD decoder from models/vae_approx "
        "(the file TAESD previews use): a fraction of the VAE's time and memory, slightly less exact colours and detail.",
    },
)
CHECKPOINTING_INPUT = (
    "BOOLEAN",
    {
        "default": True,
        "tooltip": "Gradient checkpointing on the gradient path (UNet and VAE decoder blocks): recomputes activations in the backward "
        "pass instead of storing them. Much less memory for a little more time; turn off only if memory is plentiful.",
    },
)


def _fraction(default: float, tooltip: str):
    return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": tooltip})


class SteerGuidedSampler:
    DESCRIPTION = (
        "A loss-guided sampler for SamplerCustom / SamplerCustomAdvanced. At each step it predicts x̂0, decodes it, "
        "scores it with the loss and moves the latent along the loss gradient. Presets reproduce published methods; "
        "'paper' is Shen et al. (NeurIPS 2024): Polyak step, random augmentation and time travel."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("SAMPLER", "STEER_TRACE")
    RETURN_NAMES = ("sampler", "trace")
    OUTPUT_TOOLTIPS = ("Plug into SamplerCustom or SamplerCustomAdvanced.", TRACE_TOOLTIP)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": VAE_INPUT,
                "loss": LOSS_INPUT,
                "preset": (
                    list(PRESETS),
                    {
                        "default": DEFAULT_PRESET,
                        "tooltip": "paper: Shen et al. (Polyak + augmentation + time travel). freedom, ugd, mpgd, dps: "
                        "those methods as their authors run them. mpgd is the fastest: no backward pass through the model.",
                    },
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.05,
                        "tooltip": "Multiplies the preset's step size. 0 = no guidance. Raise it if the result ignores the loss; "
                        "lower it if images break up or become noisy.",
                    },
                ),
            },
            "optional": {"loss_decoder": LOSS_DECODER_INPUT},
        }

    def build(self, vae, loss, preset: str, strength: float, loss_decoder: str = "vae"):
        config = preset_config(preset).with_strength(strength)
        trace = GuidanceTrace(label=preset)
        return (make_sampler(vae, loss, config, trace, loss_decoder=loss_decoder), trace)


class SteerGuidedSamplerAdvanced:
    DESCRIPTION = "The guided sampler with every engine option exposed. See the README's option table for what each one does."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("SAMPLER", "STEER_TRACE")
    RETURN_NAMES = ("sampler", "trace")
    OUTPUT_TOOLTIPS = ("Plug into SamplerCustom or SamplerCustomAdvanced.", TRACE_TOOLTIP)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        base = PRESETS[DEFAULT_PRESET]
        return {
            "required": {
                "vae": VAE_INPUT,
                "loss": LOSS_INPUT,
                "gradient_path": (
                    list(GRADIENT_PATHS),
                    {
                        "default": base.gradient_path,
                        "tooltip": "through_model: gradient w.r.t. the noisy latent, back through the model (the paper, FreeDoM, UGD, DPS). "
                        "x0_shortcut: gradient w.r.t. x̂0 only (MPGD), no backward through the model: about half the cost.",
                    },
                ),
                "cfg_gradient": (
                    list(CFG_GRADIENTS),
                    {
                        "default": base.cfg_gradient,
                        "tooltip": "With CFG on: backpropagate through the positive branch only (cheaper), or through the combined CFG prediction.",
                    },
                ),
                "step_rule": (
                    list(STEP_RULES),
                    {
                        "default": base.step_rule,
                        "tooltip": "polyak: η·‖ε̂‖/‖g‖² per sample (Shen et al.). loss_polyak: η·loss/‖g‖², removes about the fraction η of the loss per step on any model. normalized: step RMS = scale × the denoising step's RMS (FreeDoM). constant: scale × gradient (DPS).",
                    },
                ),
                "scale": ("FLOAT", {"default": base.scale, "min": 0.0, "max": 1e4, "step": 0.01, "tooltip": "η of the step rule. Typical: polyak 0.1–5, loss_polyak 0.02–0.3, normalized 0.05–1, constant depends on the loss scale."}),
                "max_step": ("FLOAT", {"default": base.max_step, "min": 1e-4, "max": 100.0, "step": 0.01, "tooltip": "Cap on each sample's RMS displacement, in units of the current noise level σ (x0_shortcut: data units). Guards against huge Polyak steps on flat losses."}),
                "augment_copies": ("INT", {"default": base.augment.copies, "min": 0, "max": 64, "tooltip": "Random augmentation |T|: number of DiffAugment views (colour, translation, resize, cutout) scored per step in one batch. 0 = off. The paper uses 10."}),
                "time_travel_repeats": ("INT", {"default": base.time_travel.repeats, "min": 1, "max": 20, "tooltip": "Time travel: each step inside the time-travel window is done this many times, re-noising in between. 1 = off."}),
                "time_travel_start": _fraction(base.time_travel.window.start, "Where the time-travel window starts, as a fraction of the sampling steps (0 = first step)."),
                "time_travel_end": _fraction(base.time_travel.window.end, "Where the time-travel window ends, as a fraction of the sampling steps (1 = after the last step)."),
                "guidance_start": _fraction(base.window.start, "First part of the schedule that is guided, as a fraction of the steps."),
                "guidance_end": _fraction(base.window.end, "End of the guided part of the schedule. Leaving the last steps unguided lets the model clean up."),
                "eta": ("FLOAT", {"default": base.eta, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "DDIM η: 0 = deterministic DDIM, 1 = Euler ancestral (fresh noise each step)."}),
            },
            "optional": {"loss_decoder": LOSS_DECODER_INPUT, "gradient_checkpointing": CHECKPOINTING_INPUT},
        }

    def build(
        self, vae, loss, gradient_path, cfg_gradient, step_rule, scale, max_step, augment_copies, time_travel_repeats,
        time_travel_start, time_travel_end, guidance_start, guidance_end, eta, loss_decoder="vae", gradient_checkpointing=True,
    ):
        config = GuidanceConfig(
            gradient_path=gradient_path,
            cfg_gradient=cfg_gradient,
            step_rule=step_rule,
            scale=scale,
            max_step=max_step,
            augment=AugmentConfig(copies=augment_copies),
            time_travel=TimeTravel(repeats=time_travel_repeats, window=Window(time_travel_start, time_travel_end)),
            window=Window(guidance_start, guidance_end),
            eta=eta,
        )
        trace = GuidanceTrace(label="advanced")
        return (make_sampler(vae, loss, config, trace, loss_decoder=loss_decoder, checkpointing=gradient_checkpointing), trace)


class SteerGuidanceReport:
    DESCRIPTION = "Shows what the guidance did in the last run: a plot of the per-step loss and step size, and the numbers as JSON."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("plot", "json")
    OUTPUT_TOOLTIPS = ("Loss and step size per sampling step (mean over the batch). Connect to Preview Image.", "Every recorded value, per sample, as JSON.")
    FUNCTION = "report"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "trace": ("STEER_TRACE", {"tooltip": "The trace output of a Steer guided sampler."}),
                "samples": ("LATENT", {"tooltip": "The sampler's output latent. Connecting it makes the report run after sampling has finished."}),
            }
        }

    def report(self, trace: GuidanceTrace, samples):
        plot = torch.from_numpy(plot_trace(trace)).unsqueeze(0)
        return (plot, trace.to_json())


NODE_CLASS_MAPPINGS = {
    "SteerGuidedSampler": SteerGuidedSampler,
    "SteerGuidedSamplerAdvanced": SteerGuidedSamplerAdvanced,
    "SteerGuidanceReport": SteerGuidanceReport,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SteerGuidedSampler": "Steer Guided Sampler",
    "SteerGuidedSamplerAdvanced": "Steer Guided Sampler (Advanced)",
    "SteerGuidanceReport": "Steer Guidance Report",
}
