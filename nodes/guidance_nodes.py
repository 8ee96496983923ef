"""Guided sampler nodes. They read inputs, build a GuidanceConfig and hand over to the engine."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..guidance.augment import AugmentConfig
from ..guidance.config import CFG_GRADIENTS, DEFAULT_PRESET, GRADIENT_PATHS, PRESETS, GuidanceConfig, TimeTravel
from ..guidance.config import preset as preset_config
from ..guidance.losses.base import Window
from ..guidance.plot import plot_trace
from ..guidance.step_rules import STEP_RULES
from ..guidance.trace import GuidanceTrace
from .comfy_guidance import LOSS_DECODERS, make_sampler
from .regions import SAMPLER_MASK, mask_input, outside_input, sampler_region
from .schema import Choice, Loss, Trace, fraction, gradient_checkpointing

CATEGORY = "Steer/sampling"


def sampler_inputs() -> list[io.Input]:
    """The two sockets every guided sampler starts with."""
    return [
        io.Vae.Input(
            "vae", tooltip="The VAE that matches the model. Guided steps decode x̂0 with it (keeping gradients) to score the loss."
        ),
        Loss.Input("loss", tooltip="What to steer toward: a Steer loss node (colour, edges, CLIP, classifier, or a combination)."),
    ]


def loss_decoder_input() -> Choice:
    return Choice(
        "loss_decoder",
        LOSS_DECODERS,
        default="vae",
        optional=True,
        tooltip="What decodes x̂0 for the loss. vae: the connected VAE (exact). taesd: the tiny TAESD decoder from models/vae_approx "
        "(the file TAESD previews use): a fraction of the VAE's time and memory, slightly less exact colours and detail.",
    )


def sampler_outputs() -> list[io.Output]:
    return [
        io.Sampler.Output(display_name="sampler", tooltip="Plug into SamplerCustom or SamplerCustomAdvanced."),
        Trace.Output(
            display_name="trace",
            tooltip="A record of what the guidance did (per-step loss, gradient norm, step size), filled in when the sampler runs. "
            "Connect it to Steer Guidance Report.",
        ),
    ]


class SteerGuidedSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerGuidedSampler",
            display_name="Steer Guided Sampler",
            category=CATEGORY,
            description="A loss-guided sampler for SamplerCustom / SamplerCustomAdvanced. At each step it predicts x̂0, decodes it, "
            "scores it with the loss and moves the latent along the loss gradient. Presets reproduce published methods; "
            "'paper' is Shen et al. (NeurIPS 2024): Polyak step, random augmentation and time travel.",
            inputs=[
                *sampler_inputs(),
                Choice(
                    "preset",
                    PRESETS,
                    default=DEFAULT_PRESET,
                    tooltip="paper: Shen et al. (Polyak + augmentation + time travel). freedom, ugd, mpgd, dps: "
                    "those methods as their authors run them. mpgd is the fastest: no backward pass through the model.",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=100.0,
                    step=0.05,
                    tooltip="Multiplies the preset's step size. 0 = no guidance. Raise it if the result ignores the loss; "
                    "lower it if images break up or become noisy.",
                ),
                loss_decoder_input(),
                mask_input(SAMPLER_MASK),
                outside_input(),
            ],
            outputs=sampler_outputs(),
        )

    @classmethod
    def execute(
        cls, vae, loss, preset: str, strength: float, loss_decoder: str = "vae", mask=None, mask_outside: str = "unguided"
    ) -> io.NodeOutput:
        config = preset_config(preset).with_strength(strength)
        trace = GuidanceTrace(label=preset)
        sampler = make_sampler(vae, loss, config, trace, loss_decoder=loss_decoder, region=sampler_region(mask), outside=mask_outside)
        return io.NodeOutput(sampler, trace)


class SteerGuidedSamplerAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        base = PRESETS[DEFAULT_PRESET]
        return io.Schema(
            node_id="SteerGuidedSamplerAdvanced",
            display_name="Steer Guided Sampler (Advanced)",
            category=CATEGORY,
            description="The guided sampler with every engine option exposed. See the README's option table for what each one does.",
            inputs=[
                *sampler_inputs(),
                Choice(
                    "gradient_path",
                    GRADIENT_PATHS,
                    default=base.gradient_path,
                    tooltip="through_model: gradient w.r.t. the noisy latent, back through the model (the paper, FreeDoM, UGD, DPS). "
                    "x0_shortcut: gradient w.r.t. x̂0 only (MPGD), no backward through the model: about half the cost.",
                ),
                Choice(
                    "cfg_gradient",
                    CFG_GRADIENTS,
                    default=base.cfg_gradient,
                    tooltip="With CFG on: backpropagate through the positive branch only (cheaper), or through the combined CFG "
                    "prediction.",
                ),
                Choice(
                    "step_rule",
                    STEP_RULES,
                    default=base.step_rule,
                    tooltip="polyak: η·‖ε̂‖/‖g‖² per sample (Shen et al.). loss_polyak: η·loss/‖g‖², removes about the fraction η of the "
                    "loss per step on any model. normalized: step RMS = scale × the denoising step's RMS (FreeDoM). constant: scale × "
                    "gradient (DPS).",
                ),
                io.Float.Input(
                    "scale",
                    default=base.scale,
                    min=0.0,
                    max=1e4,
                    step=0.01,
                    tooltip="η of the step rule. Typical: polyak 0.1–5, loss_polyak 0.02–0.3, normalized 0.05–1, constant depends on "
                    "the loss scale.",
                ),
                io.Float.Input(
                    "max_step",
                    default=base.max_step,
                    min=1e-4,
                    max=100.0,
                    step=0.01,
                    tooltip="Cap on each sample's RMS displacement, in units of the current noise level σ (x0_shortcut: data units). "
                    "Guards against huge Polyak steps on flat losses.",
                ),
                io.Int.Input(
                    "augment_copies",
                    default=base.augment.copies,
                    min=0,
                    max=64,
                    tooltip="Random augmentation |T|: number of DiffAugment views (colour, translation, resize, cutout) scored per step "
                    "in one batch. 0 = off. The paper uses 10.",
                ),
                io.Int.Input(
                    "time_travel_repeats",
                    default=base.time_travel.repeats,
                    min=1,
                    max=20,
                    tooltip="Time travel: each step inside the time-travel window is done this many times, re-noising in between. 1 = off.",
                ),
                fraction(
                    "time_travel_start",
                    base.time_travel.window.start,
                    "Where the time-travel window starts, as a fraction of the sampling steps (0 = first step).",
                ),
                fraction(
                    "time_travel_end",
                    base.time_travel.window.end,
                    "Where the time-travel window ends, as a fraction of the sampling steps (1 = after the last step).",
                ),
                fraction("guidance_start", base.window.start, "First part of the schedule that is guided, as a fraction of the steps."),
                fraction(
                    "guidance_end",
                    base.window.end,
                    "End of the guided part of the schedule. Leaving the last steps unguided lets the model clean up.",
                ),
                io.Float.Input(
                    "eta",
                    default=base.eta,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="DDIM η: 0 = deterministic DDIM, 1 = Euler ancestral (fresh noise each step).",
                ),
                loss_decoder_input(),
                gradient_checkpointing(
                    "Gradient checkpointing on the gradient path (UNet and VAE decoder blocks): recomputes activations in the backward "
                    "pass instead of storing them. Much less memory for a little more time; turn off only if memory is plentiful."
                ),
                mask_input(SAMPLER_MASK),
                outside_input(),
            ],
            outputs=sampler_outputs(),
        )

    @classmethod
    def execute(
        cls,
        vae,
        loss,
        gradient_path,
        cfg_gradient,
        step_rule,
        scale,
        max_step,
        augment_copies,
        time_travel_repeats,
        time_travel_start,
        time_travel_end,
        guidance_start,
        guidance_end,
        eta,
        loss_decoder="vae",
        gradient_checkpointing=True,
        mask=None,
        mask_outside="unguided",
    ) -> io.NodeOutput:
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
        sampler = make_sampler(
            vae,
            loss,
            config,
            trace,
            loss_decoder=loss_decoder,
            checkpointing=gradient_checkpointing,
            region=sampler_region(mask),
            outside=mask_outside,
        )
        return io.NodeOutput(sampler, trace)


class SteerGuidanceReport(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SteerGuidanceReport",
            display_name="Steer Guidance Report",
            category=CATEGORY,
            description="Shows what the guidance did in the last run: a plot of the per-step loss and step size, and the numbers as JSON.",
            inputs=[
                Trace.Input("trace", tooltip="The trace output of a Steer guided sampler."),
                io.Latent.Input(
                    "samples", tooltip="The sampler's output latent. Connecting it makes the report run after sampling has finished."
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="plot", tooltip="Loss and step size per sampling step (mean over the batch). Connect to Preview Image."
                ),
                io.String.Output(display_name="json", tooltip="Every recorded value, per sample, as JSON."),
            ],
        )

    @classmethod
    def execute(cls, trace: GuidanceTrace, samples) -> io.NodeOutput:
        plot = torch.from_numpy(plot_trace(trace)).unsqueeze(0)
        return io.NodeOutput(plot, trace.to_json())


NODES = (SteerGuidedSampler, SteerGuidedSamplerAdvanced, SteerGuidanceReport)
