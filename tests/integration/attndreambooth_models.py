"""The tiny models of attndreambooth_probe.py: one set of random weights, built both in diffusers/transformers
and in ComfyUI's own classes (the UNet through personalize/ldm_names.py, the CLIP by its HF key names, the VAE by
ComfyUI's own diffusers conversion; SDXL from steer.benchmarks.comfy_tiny_sdxl). Imported by the probe only, after
it has put ComfyUI on sys.path in CPU mode."""

import copy
import os

import comfy.model_base
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import torch
from comfy.text_encoders import sd2_clip

from steer.benchmarks.comfy_tiny_sdxl import tiny_sdxl
from steer.benchmarks.random_checkpoints import TINY_UNET_DETECTED_CONFIG
from steer.personalize.diffusers_backbone import DiffusersBackbone
from steer.personalize.ldm_names import diffusers_to_ldm_names

TOKENIZER_PATH = os.path.join(os.environ.get("COMFYUI_PATH", "/opt/ComfyUI"), "comfy", "sd1_tokenizer")
WIDTH = 32
RESOLUTION = 32  # latents 4×4, so the UNet's lower level still has 2×2 positions to attend over


def tiny_unet(seed, linear_projection=False):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    # ComfyUI's UNet hard-codes 32 normalisation groups, hence 32/64 channels.
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=WIDTH,
        attention_head_dim=2,
        norm_num_groups=32,
        use_linear_projection=linear_projection,
    )
    with torch.no_grad():  # diffusers zero-initialises some output layers; make every weight matter
        for parameter in unet.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return unet


def comfy_unet(unet, config_class, model_type):
    unet_config = {
        **TINY_UNET_DETECTED_CONFIG,
        "model_channels": 32,
        "use_linear_in_transformer": config_class is comfy.supported_models.SD20,
        "context_dim": WIDTH,
    }
    config = config_class(unet_config)
    config.unet_config.update({"num_heads": 2, "num_head_channels": -1})
    config.set_inference_dtype(torch.float32, None)
    names = diffusers_to_ldm_names(unet)
    state = {names[name]: tensor for name, tensor in unet.state_dict().items()}
    with torch.inference_mode():  # like a loader node: the weights become inference tensors
        model = comfy.model_base.BaseModel(config, model_type=model_type, device="cpu")
        missing, unexpected = model.diffusion_model.load_state_dict(state, strict=False)
        assert not missing and not unexpected, (missing[:5], unexpected[:5])
        return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def hf_text_config(layers, activation):
    return {
        "vocab_size": 49408,
        "hidden_size": WIDTH,
        "intermediate_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": activation,
        "layer_norm_eps": 1e-5,
        "projection_dim": WIDTH,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }


def tiny_text_encoders(variant, seed):
    """(transformers CLIPTextModel for diffusers, ComfyUI CLIP) with the same weights. SD2 uses the
    penultimate layer in ComfyUI; its diffusers twin is the same tower without the last layer,
    exactly as the official SD2 text_encoder folder is."""
    from transformers import CLIPTextConfig, CLIPTextModel

    layers, activation = (2, "quick_gelu") if variant == "sd1" else (3, "gelu")
    torch.manual_seed(seed)
    full = CLIPTextModel(CLIPTextConfig(**hf_text_config(layers, activation)))
    with torch.no_grad():  # ComfyUI keeps text encoders in fp16 (also on the CPU): give both the same values
        for parameter in full.parameters():
            parameter.copy_(parameter.half().float())
    state = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in full.state_dict().items()}
    if variant == "sd1":
        hf = full
    else:
        hf = CLIPTextModel(CLIPTextConfig(**hf_text_config(layers - 1, activation)))
        hf.load_state_dict({k: v for k, v in full.state_dict().items() if f"layers.{layers - 1}." not in k}, strict=False)
    config = {key: value for key, value in hf_text_config(layers, activation).items()}

    if variant == "sd1":

        class Encoder(comfy.sd1_clip.SDClipModel):
            def __init__(self, device="cpu", dtype=None, model_options={}):
                super().__init__(
                    device=device,
                    dtype=dtype,
                    textmodel_json_config=dict(config),
                    return_projected_pooled=False,
                    model_options=model_options,
                )

        class Clip(comfy.sd1_clip.SD1ClipModel):
            def __init__(self, device="cpu", dtype=None, model_options={}):
                super().__init__(device=device, dtype=dtype, model_options=model_options, clip_model=Encoder)

        class Tokenizer(comfy.sd1_clip.SD1Tokenizer):
            def __init__(self, embedding_directory=None, tokenizer_data={}):
                super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)
    else:

        class Encoder(comfy.sd1_clip.SDClipModel):
            def __init__(self, device="cpu", dtype=None, model_options={}):
                super().__init__(
                    device=device,
                    dtype=dtype,
                    layer="hidden",
                    layer_idx=-2,
                    textmodel_json_config=dict(config),
                    special_tokens={"start": 49406, "end": 49407, "pad": 0},
                    return_projected_pooled=True,
                    model_options=model_options,
                )

        class Clip(comfy.sd1_clip.SD1ClipModel):
            def __init__(self, device="cpu", dtype=None, model_options={}):
                super().__init__(device=device, dtype=dtype, model_options=model_options, clip_name="h", clip_model=Encoder)

        class Tokenizer(sd2_clip.SD2Tokenizer):
            pass

    with torch.inference_mode():
        clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(Tokenizer, Clip), embedding_directory=None)
        clip.load_sd(state)
    return hf.eval(), clip


def tiny_vaes(seed, scaling_factor=0.18215):
    """The SD VAE at its SD1/SD2 latent scale, or SDXL's (0.13025, ComfyUI's SDXL latent format)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(  # the SD VAE layout, which is what ComfyUI's converter knows
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=32,
        scaling_factor=scaling_factor,
    )
    with torch.inference_mode():
        comfy_vae = comfy.sd.VAE(sd={k: v.clone() for k, v in vae.state_dict().items()})
    return vae.eval(), comfy_vae


def backbones(variant):
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    if variant == "sdxl":
        components, model, clip = tiny_sdxl(1, sample_size=RESOLUTION // 8)
        vae, comfy_vae = tiny_vaes(3, scaling_factor=0.13025)
        components = {**components, "unet": copy.deepcopy(components["unet"]), "vae": vae}
        return DiffusersBackbone(**components, identity="tiny-sdxl", frozen_dtype=torch.float32), (model, clip, comfy_vae)

    unet = tiny_unet(1, linear_projection=variant == "sd2")  # SD2 UNets use linear proj_in/out
    text_encoder, clip = tiny_text_encoders(variant, 2)
    vae, comfy_vae = tiny_vaes(3)
    prediction = "epsilon" if variant == "sd1" else "v_prediction"
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000, prediction_type=prediction
    )
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_PATH, **({} if variant == "sd1" else {"pad_token": "!"}))
    config_class = comfy.supported_models.SD15 if variant == "sd1" else comfy.supported_models.SD20
    model_type = comfy.model_base.ModelType.EPS if variant == "sd1" else comfy.model_base.ModelType.V_PREDICTION
    model = comfy_unet(unet, config_class, model_type)
    diffusers_backbone = DiffusersBackbone(
        copy.deepcopy(unet), text_encoder, tokenizer, vae, scheduler, identity="tiny", frozen_dtype=torch.float32
    )
    return diffusers_backbone, (model, clip, comfy_vae)
