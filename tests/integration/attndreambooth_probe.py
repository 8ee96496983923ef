"""The ComfyUI AttnDreamBooth backend against the diffusers one, inside a ComfyUI process (run as a
script, never imported by pytest: it needs ComfyUI's top-level modules on sys.path).

Usage: python attndreambooth_probe.py [all|parity|errors]   (prints one line "PROBE_REPORT {json}")

parity: tiny random diffusers models (UNet, CLIP text model, SD VAE) and ComfyUI's own classes
built from the same weights (attndreambooth_models.py). Both backbones then get the
same prompt, photos, latents, noise and timesteps, and the report compares the prompt
embeddings, the latents, the noise predictions, the cross-attention regularizer (weights 2, 5)
and its gradient with respect to the token, plus a full short training run of personalize's
trainer on each (one step per stage). Variants: "sd1" (ε, last CLIP layer, pad = end token),
"sd2" (v-prediction, penultimate CLIP layer, pad = 0) and "sdxl" (ComfyUI's SDXL model class and
SDXLClipModel layout from benchmarks/comfy_tiny_sdxl.py: two learned vectors, CLIP-G's pooled vector
and the size conditioning, two transformer blocks per attention layer), all in float32 on the CPU.

errors: what ComfyBackbone says for the SDXL refiner, a DiT model, SD1 and SDXL text encoders
swapped, a MODEL/CLIP width mismatch, a wrong VAE and a VAE that overflows; that training leaves
ComfyUI's objects as they were (CLIPLayer forwards, weight functions, model options, block
forwards and the stock model output); and that a plan without stage 3 trains the same with
float32 copies of the cross-attention weights only.
"""

import copy
import json
import os
import sys
import tempfile

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "/opt/ComfyUI")
sys.path.insert(0, COMFYUI_PATH)
os.chdir(COMFYUI_PATH)

import comfy.cli_args  # noqa: E402
import torch  # noqa: E402

comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: there is no GPU here

import comfy.clip_model  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.supported_models  # noqa: E402
from attndreambooth_models import RESOLUTION, backbones, comfy_unet, tiny_unet  # noqa: E402

from steer.benchmarks.comfy_tiny_sdxl import tiny_sdxl  # noqa: E402
from steer.errors import SteerError  # noqa: E402
from steer.nodes.comfy_personalize import ComfyBackbone  # noqa: E402
from steer.personalize.checkpoint import CheckpointStore  # noqa: E402
from steer.personalize.data import TrainingImages  # noqa: E402
from steer.personalize.regularizer import AttentionCapture, attention_regularizer  # noqa: E402
from steer.personalize.stages import RegularizerWeights, custom_plan  # noqa: E402
from steer.personalize.trainer import RuntimeOptions, run_fingerprint, train  # noqa: E402

PROMPT = "a photo of a [V] dog"
torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# parity


def photos():
    generator = torch.Generator().manual_seed(0)
    sizes = [(20, 24), (30, 18), (16, 16)]
    return [
        torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=generator), size=size, mode="bilinear", align_corners=False)[0]
        for size in sizes
    ]


def one_pass(backbone, latents, noise, timesteps):
    """prompt -> x_t -> prediction with capture -> (embeddings, prediction, regularizer, d(mse + reg)/d token)."""
    backbone.reset_token("dog")
    tokens = backbone.parameter_groups()["token"]
    for token in tokens.values():
        token.requires_grad_(True)
    prompt = backbone.encode_prompt(PROMPT)
    noisy = backbone.schedule.add_noise(latents, noise, timesteps)
    target = backbone.schedule.target(latents, noise, timesteps)
    capture = AttentionCapture()
    with backbone.attention_capture(capture), capture.recording(prompt.token_index, prompt.category_index) as maps:
        text = prompt.expand(latents.shape[0])
        prediction = backbone.predict_noise(noisy, timesteps, text.embeddings, text.pooled)
    regularizer = attention_regularizer(maps, RegularizerWeights(2.0, 5.0))
    loss = torch.nn.functional.mse_loss(prediction.float(), target) + regularizer
    gradients = torch.autograd.grad(loss, list(tokens.values()))
    for token in tokens.values():
        token.requires_grad_(False)
    return {
        "embeddings": prompt.embeddings.detach().cpu(),
        "pooled": None if prompt.pooled is None else prompt.pooled.detach().cpu(),
        "token_index": prompt.token_index,
        "prediction": prediction.detach().cpu(),
        "regularizer": float(regularizer.detach()),
        "layers": len(maps),
        "gradients": {name: gradient.detach().cpu() for name, gradient in zip(tokens, gradients)},
    }


def compare(a, b):
    a, b = a.float(), b.float()
    return {"max_abs": float((a - b).abs().max()), "scale": float(a.abs().max())}


def parity_variant(variant):
    diffusers_backbone, (model, clip, vae) = backbones(variant)
    report = {}
    images = TrainingImages(photos(), RESOLUTION)
    pixels = torch.stack([images.sample(index, torch.Generator().manual_seed(10 + index)) for index in range(3)])
    generators = lambda: [torch.Generator().manual_seed(20 + index) for index in range(3)]  # noqa: E731
    noise = torch.randn(3, 4, RESOLUTION // 8, RESOLUTION // 8, generator=torch.Generator().manual_seed(5))
    timesteps = torch.tensor([3, 480, 990])

    with torch.inference_mode(False), torch.enable_grad():
        comfy_backbone = ComfyBackbone(model, clip, vae)
        with comfy_backbone:
            report["schedule"] = compare(diffusers_backbone.schedule.alphas_cumprod, comfy_backbone.schedule.alphas_cumprod)
            report["prediction_types"] = [diffusers_backbone.schedule.prediction_type, comfy_backbone.schedule.prediction_type]
            report["embedding_keys"] = [sorted(diffusers_backbone.token_embeddings()), sorted(comfy_backbone.token_embeddings())]
            report["latents"] = compare(
                diffusers_backbone.encode_images(pixels, generators()), comfy_backbone.encode_images(pixels, generators())
            )
            latents = diffusers_backbone.encode_images(pixels, generators())
            ours, theirs = one_pass(diffusers_backbone, latents, noise, timesteps), one_pass(comfy_backbone, latents, noise, timesteps)
            report["token_index"] = [ours["token_index"], theirs["token_index"]]
            report["layers"] = [ours["layers"], theirs["layers"]]
            for key in ("embeddings", "prediction"):
                report[key] = compare(ours[key], theirs[key])
            report["pooled"] = None if ours["pooled"] is None else compare(ours["pooled"], theirs["pooled"])
            report["pooled_present"] = [ours["pooled"] is not None, theirs["pooled"] is not None]
            report["gradient_names"] = [sorted(ours["gradients"]), sorted(theirs["gradients"])]
            report["gradients"] = {name: compare(ours["gradients"][name], theirs["gradients"][name]) for name in ours["gradients"]}
            report["regularizer"] = [ours["regularizer"], theirs["regularizer"]]

        # The whole trainer, one step per stage, on the same (still untrained) weights.
        plan = custom_plan(
            token_steps=1,
            cross_attention_steps=1,
            unet_steps=1,
            token_batch_size=2,
            cross_attention_batch_size=2,
            unet_batch_size=2,
            resolution=RESOLUTION,
        )
        options = RuntimeOptions(precision="fp32", gradient_checkpointing=False)
        histories = [train(diffusers_backbone, images, "dog", plan, seed=7, options=options).history]
        with ComfyBackbone(model, clip, vae) as comfy_backbone:
            comfy_options = RuntimeOptions(precision="fp32", gradient_checkpointing=True)  # and checkpointing changes nothing
            histories.append(train(comfy_backbone, images, "dog", plan, seed=7, options=comfy_options).history)
            ours_vectors, theirs_vectors = diffusers_backbone.token_embeddings(), comfy_backbone.token_embeddings()
            # By encoder order: the diffusers backend names a lone encoder's key by its width, which is tiny here.
            report["tokens_after_training"] = {
                key: compare(ours_vectors[ours_key], theirs_vectors[key]) for ours_key, key in zip(ours_vectors, theirs_vectors)
            }
            theirs_deltas, ours_deltas = comfy_backbone.unet_weight_deltas(), diffusers_backbone.unet_weight_deltas()
        report["history"] = [[{k: entry[k] for k in ("stage", "diffusion", "regularizer")} for entry in history] for history in histories]
        report["delta_names_equal"] = sorted(theirs_deltas) == sorted(ours_deltas)
        zero = torch.zeros(())
        report["deltas"] = max(
            (
                float((ours_deltas.get(name, zero) - theirs_deltas.get(name, zero)).abs().max())
                for name in set(ours_deltas) | set(theirs_deltas)
            ),
            default=0.0,
        )
        report["delta_scale"] = max((float(delta.abs().max()) for delta in ours_deltas.values()), default=0.0)
    return report


def parity():
    return {variant: parity_variant(variant) for variant in ("sd1", "sd2", "sdxl")}


# --------------------------------------------------------------------------------------------
# errors and restoration


def error_of(function):
    try:
        function()
    except SteerError as error:
        return str(error)
    return None


def errors():
    report = {}
    _, (model, clip, vae) = backbones("sd1")

    # SDXL and a DiT model: real model classes, tiny or bare instances are enough for the check.
    refiner = model.clone()
    refiner.model = comfy.model_base.SDXLRefiner.__new__(comfy.model_base.SDXLRefiner)
    torch.nn.Module.__init__(refiner.model)
    report["refiner"] = error_of(lambda: ComfyBackbone(refiner, clip, vae))
    _, sdxl_model, sdxl_clip = tiny_sdxl(1, sample_size=RESOLUTION // 8)
    report["sdxl_with_sd1_clip"] = error_of(lambda: ComfyBackbone(sdxl_model, clip, vae))
    report["sd1_with_sdxl_clip"] = error_of(lambda: ComfyBackbone(model, sdxl_clip, vae))
    flux = model.clone()
    flux.model = comfy.model_base.Flux.__new__(comfy.model_base.Flux)
    torch.nn.Module.__init__(flux.model)
    flux.model.model_config = comfy.supported_models.Flux.__new__(comfy.supported_models.Flux)
    report["flux"] = error_of(lambda: ComfyBackbone(flux, clip, vae))
    # A CLIP whose width is not the UNet's context width.
    with torch.inference_mode():
        wide_model = comfy_unet(tiny_unet(1), comfy.supported_models.SD15, comfy.model_base.ModelType.EPS)
    wide_model.model.model_config.unet_config["context_dim"] = 64
    report["mismatch"] = error_of(lambda: ComfyBackbone(wide_model, clip, vae))
    report["no_clip"] = error_of(lambda: ComfyBackbone(model, None, vae))
    bad_vae = copy.copy(vae)
    bad_vae.latent_channels = 16
    report["bad_vae"] = error_of(lambda: ComfyBackbone(model, clip, bad_vae))
    overflowing_vae = copy.copy(vae)  # as SDXL's original VAE in fp16: the encoder overflows
    with torch.inference_mode():
        overflowing_vae.first_stage_model = copy.deepcopy(vae.first_stage_model)
        overflowing_vae.first_stage_model.encoder.conv_in.weight.fill_(float("inf"))
    views = TrainingImages(photos(), RESOLUTION, views_per_image=2).all_views()
    with torch.inference_mode(False):
        report["overflowing_vae"] = error_of(lambda: ComfyBackbone(model, clip, overflowing_vae).cache_latents(views))

    # Train briefly, then check that nothing of ComfyUI's is left changed.
    x = torch.randn(1, 4, 4, 4)
    with torch.inference_mode():
        cond = clip.encode_from_tokens(clip.tokenize("a photo of a dog"))
        comfy.model_management.load_models_gpu([model])
        before = model.model.apply_model(x, torch.tensor([1.0]), c_crossattn=cond)
    layers = [m for m in clip.cond_stage_model.modules() if isinstance(m, comfy.clip_model.CLIPLayer)]
    options_before = copy.deepcopy(model.model_options)
    wrappers_before = {k: list(v) for k, v in model.weight_wrapper_patches.items()}
    images = TrainingImages(photos(), RESOLUTION)
    plan = custom_plan(
        token_steps=1,
        cross_attention_steps=1,
        unet_steps=1,
        token_batch_size=1,
        cross_attention_batch_size=1,
        unet_batch_size=1,
        resolution=RESOLUTION,
    )

    class Stop(Exception):
        pass

    def stop_in_stage_3(stage, step, steps, loss):
        if stage == "unet":
            raise Stop

    with torch.inference_mode(False), torch.enable_grad():
        backbone = ComfyBackbone(model, clip, vae)
        try:
            with backbone:
                during = {"clip_layers_patched": all("forward" in layer.__dict__ for layer in layers)}
                store = CheckpointStore(tempfile.mkdtemp(), run_fingerprint(backbone, images, "dog", plan, 0))  # saves on the stop too
                train(backbone, images, "dog", plan, seed=0, progress=stop_in_stage_3, store=store)
        except Stop:
            report["stopped"] = True
    report.update(during)
    report["clip_layers_restored"] = not any("forward" in layer.__dict__ for layer in layers)
    report["blocks_restored"] = not any("forward" in m.__dict__ for m in model.model.diffusion_model.modules())
    report["model_options_unchanged"] = repr(model.model_options) == repr(options_before)
    report["weight_wrappers_unchanged"] = {k: list(v) for k, v in model.weight_wrapper_patches.items()} == wrappers_before
    with torch.inference_mode():
        comfy.model_management.load_models_gpu([model])
        after = model.model.apply_model(x, torch.tensor([1.0]), c_crossattn=cond)
        cond_after = clip.encode_from_tokens(clip.tokenize("a photo of a dog"))
    report["stock_output_identical"] = bool(torch.equal(before, after))
    report["stock_cond_identical"] = bool(torch.equal(cond, cond_after))
    # Loader weights have requires_grad=True: no backward may leave gradients on ComfyUI's own parameters.
    report["upstream_gradients_after_training"] = upstream_gradients(model, clip)
    report["our_weight_functions_left"] = sum(
        1 for m in model.model.modules() for f in getattr(m, "weight_function", []) if type(f).__name__ == "_TrainableWeight"
    )
    report.update(untrained_weights_stay_comfyuis(model, clip, vae, images))
    return report


def upstream_gradients(model, clip) -> int:
    """How many parameters of ComfyUI's own UNet and text encoders hold a .grad."""
    return sum(parameter.grad is not None for module in (model.model, clip.cond_stage_model) for parameter in module.parameters())


def untrained_weights_stay_comfyuis(model, clip, vae, images):
    """A plan without stage 3 trains the same with float32 copies of every UNet weight or of the cross-attention ones only."""
    plan = custom_plan(
        token_steps=1, cross_attention_steps=1, unet_steps=0, token_batch_size=1, cross_attention_batch_size=1, resolution=RESOLUTION
    )
    options = RuntimeOptions(precision="fp32", gradient_checkpointing=False)
    runs = {}
    with torch.inference_mode(False), torch.enable_grad():
        for label, groups in (("all", ("token", "cross_attention", "unet")), ("planned", plan.trained_groups)):
            with ComfyBackbone(model, clip, vae, trained_groups=groups) as backbone:
                history = train(backbone, images, "dog", plan, seed=3, options=options).history
                runs[label] = {
                    "history": [(entry["diffusion"], entry["regularizer"]) for entry in history],
                    "copies": sum(parameter.numel() for parameter in backbone.parameter_groups()["unet"].values()),
                    "deltas": {name: delta for name, delta in backbone.unet_weight_deltas().items()},
                }
        attn2 = sum(parameter.numel() for name, parameter in model.model.diffusion_model.named_parameters() if ".attn2." in name)
        with ComfyBackbone(model, clip, vae, trained_groups=("token",)) as backbone:
            try:
                train(backbone, images, "dog", plan, seed=3, options=options)
                wrong_groups = None
            except RuntimeError as error:
                wrong_groups = str(error)
    all_deltas, planned_deltas = runs["all"]["deltas"], runs["planned"]["deltas"]
    return {
        "planned_history_equal": runs["all"]["history"] == runs["planned"]["history"],
        "planned_copies": [runs["all"]["copies"], runs["planned"]["copies"], attn2],
        "planned_deltas_equal": sorted(all_deltas) == sorted(planned_deltas)
        and all(torch.equal(all_deltas[name], planned_deltas[name]) for name in all_deltas),
        "wrong_groups": wrong_groups,
        "upstream_gradients_after_planned": upstream_gradients(model, clip),
    }


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "all"
    result = {"parity": parity, "errors": errors, "all": lambda: {"parity": parity(), "errors": errors()}}[command]()
    print("PROBE_REPORT " + json.dumps(result))
