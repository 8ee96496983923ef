"""Stock CLIP_VISION through Steer's losses, inside a real ComfyUI process (run as a script, never imported by pytest).

Usage:
  python clip_vision_probe.py build FILE.safetensors   write a ViT-L/14 CLIP vision file with random weights
  python clip_vision_probe.py probe FILE.safetensors   load it with the stock nodes, run our losses, print JSON

It runs in its own process with the ComfyUI checkout (COMFYUI_PATH) first on sys.path, because
it needs ComfyUI's top-level `nodes` module, which the pytest process must never import.

`build` uses ComfyUI's own CLIPVisionModelProjection with the ViT-L config, so the keys are
exactly what comfy.clip_vision.load detects: ViT-L is the smallest CLIP vision config it
recognises (24 layers, width 1024; ~300 M parameters, ~600 MB in fp16).

`probe`, mimicking how ComfyUI runs nodes (everything under torch.inference_mode()):
  1. stock CLIPVisionLoader loads the file; stock CLIPVisionEncode encodes an image (before);
  2. SteerStyleLoss and SteerCLIPImageLoss are built from the CLIP_VISION by their node classes;
  3. inside inference_mode(False) + enable_grad (as the guided sampler does) each loss runs
     forward and backward to the image; an error raised inside our scope is provoked too;
  4. the stock CLIPVisionEncode encodes the same image again (after); outputs must be identical,
     CLIPLayer.forward must be the original and no layer may keep a weight function of ours.
"""

import json
import os
import sys
import time

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "/opt/ComfyUI")
sys.path.insert(0, COMFYUI_PATH)
os.chdir(COMFYUI_PATH)

import torch  # noqa: E402


def _cpu_only() -> None:
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: there is no GPU here


def build(path: str) -> None:
    _cpu_only()
    import comfy.clip_model
    import comfy.ops
    from safetensors.torch import save_file

    with open(os.path.join(COMFYUI_PATH, "comfy", "clip_vision_config_vitl.json")) as f:
        config = json.load(f)
    model = comfy.clip_model.CLIPVisionModelProjection(config, torch.float32, "cpu", comfy.ops.manual_cast)
    generator = torch.Generator().manual_seed(20240611)
    state = {}
    for name, tensor in model.state_dict().items():
        if "layer_norm" in name or "layrnorm" in name:
            value = torch.ones_like(tensor) if name.endswith("weight") else torch.zeros_like(tensor)
        elif name.endswith("bias"):
            value = torch.zeros_like(tensor)
        else:
            value = torch.randn(tensor.shape, generator=generator) * 0.02
        state[name] = value.to(torch.float16).contiguous()
    save_file(state, path)


def _weight_function_state(model):
    return [
        (name, tuple(module.__dict__.get("weight_function", ())), tuple(module.__dict__.get("bias_function", ())))
        for name, module in model.named_modules()
        if hasattr(module, "weight_function")
    ]


def probe(path: str) -> dict:
    _cpu_only()
    import comfy.clip_model
    import comfy.clip_vision
    import folder_paths

    import nodes as comfy_nodes  # ComfyUI's own nodes.py

    folder_paths.add_model_folder_path("clip_vision", os.path.dirname(os.path.abspath(path)), is_default=True)
    from steer.nodes.comfy_clip_vision import ComfyCLIPVisionEncoder
    from steer.nodes.model_loss_nodes import SteerCLIPImageLoss, SteerStyleLoss

    original_clip_layer_forward = comfy.clip_model.CLIPLayer.forward
    report = {
        # No extra_model_paths.yaml in this process: importing the node module alone registers models/steer.
        "steer_folder_registered": os.path.join(folder_paths.models_dir, "steer") in folder_paths.get_folder_paths("steer"),
    }
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 96, 128, 3, generator=generator)  # BHWC, not square: exercises the crop
    reference = torch.rand(2, 64, 64, 3, generator=generator)

    with torch.inference_mode():  # what execution.py wraps every prompt in
        (clip_vision,) = comfy_nodes.CLIPVisionLoader().load_clip(os.path.basename(path))
        report["model_class"] = type(clip_vision.model).__name__
        report["blocks"] = len(clip_vision.model.vision_model.encoder.layers)
        report["weights_are_inference_tensors"] = next(clip_vision.model.parameters()).is_inference()
        before = comfy_nodes.CLIPVisionEncode().encode(clip_vision, image, "center")[0]
        state_before = _weight_function_state(clip_vision.model)

        (style_loss,) = SteerStyleLoss.execute(reference=reference, block=2, fit="stretch", clip_vision=clip_vision).result
        (image_loss,) = SteerCLIPImageLoss.execute(
            reference=reference, distance="spherical", fit="center_crop", clip_vision=clip_vision
        ).result

        with torch.inference_mode(False), torch.enable_grad():  # what the guided sampler does
            # A batch of 2 for the style loss (3 of 24 blocks); 1 for the image loss (all 24 blocks of ViT-L on the CPU).
            for label, loss, batch in (("style", style_loss, 2), ("image", image_loss, 1)):
                images = torch.rand(batch, 3, 64, 64, generator=generator).requires_grad_(True)
                started = time.perf_counter()
                values = loss(images)
                (grad,) = torch.autograd.grad(values.sum(), images)
                report[label] = {
                    "values": values.detach().tolist(),
                    "grad_finite": bool(torch.isfinite(grad).all()),
                    "grad_abs_sum": float(grad.abs().sum()),
                    "seconds_forward_backward": time.perf_counter() - started,
                }
            # An error raised inside our scope (bad channel count, from the preprocessing) must still restore everything.
            try:
                ComfyCLIPVisionEncoder(clip_vision).block_tokens(torch.rand(1, 4, 32, 32, requires_grad=True), 1)
                report["error_in_scope"] = "no error"
            except ValueError as error:
                report["error_in_scope"] = type(error).__name__

            # Our walk computes what the stock forward computes, and our preprocessing is clip_preprocess minus the rounding.
            encoder = ComfyCLIPVisionEncoder(clip_vision, fit="center_crop")
            # Mid-grey-centred, so bicubic overshoot stays inside [0, 1], where clip_preprocess would also clamp.
            mid_grey = 0.25 + 0.5 * image
            bchw = mid_grey.movedim(-1, 1).clone()
            stock_pixels = comfy.clip_vision.clip_preprocess(
                mid_grey.clone(), size=clip_vision.image_size, mean=clip_vision.image_mean, std=clip_vision.image_std, crop=True
            )
            report["preprocess_max_difference"] = float((encoder.preprocess(bchw) - stock_pixels).abs().max())
            report["preprocess_rounding_bound"] = 0.5 / 255 / min(clip_vision.image_std)
            with torch.no_grad():
                _, stock_block2, stock_embeds, _ = clip_vision.model(pixel_values=encoder.preprocess(bchw), intermediate_output=2)
                report["embed_max_difference"] = float((encoder.embed(bchw) - stock_embeds.float()).abs().max())
                report["block_tokens_max_difference"] = float((encoder.block_tokens(bchw, 2) - stock_block2[:, 1:].float()).abs().max())

        report["inference_mode_still_on"] = torch.is_inference_mode_enabled()
        report["weight_functions_restored"] = _weight_function_state(clip_vision.model) == state_before
        report["our_weight_functions_left"] = sum(
            1
            for _, weights, biases in _weight_function_state(clip_vision.model)
            for f in weights + biases
            if getattr(f, "__module__", "").startswith("steer")
        )
        report["clip_layer_forward_unchanged"] = comfy.clip_model.CLIPLayer.forward is original_clip_layer_forward
        after = comfy_nodes.CLIPVisionEncode().encode(clip_vision, image, "center")[0]

    report["encode_identical"] = {
        key: bool(torch.equal(before[key], after[key])) for key in ("last_hidden_state", "image_embeds", "penultimate_hidden_states")
    }
    report["encode_finite"] = bool(torch.isfinite(before["image_embeds"]).all())
    return report


if __name__ == "__main__":
    command, file_path = sys.argv[1], sys.argv[2]
    if command == "build":
        build(file_path)
    elif command == "probe":
        print("PROBE_REPORT " + json.dumps(probe(file_path)))
    else:
        raise SystemExit(f"unknown command {command!r}; use build or probe")
