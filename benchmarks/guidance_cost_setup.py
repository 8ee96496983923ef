"""The models `steer bench` times and one guided step on them: a random-weight SD1.5 UNet and SD VAE
loaded through ComfyUI's own loaders, a CLIP ViT-B/16 vision tower as the loss model, a random TAESD."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..errors import SteerError
from ..guidance.augment import AugmentConfig, RandomAugment, augmented_loss
from .clock import synchronize
from .guidance_cost_modes import Mode
from .random_checkpoints import SD15_UNET_CONFIG

# CLIP ViT-B/16, the guidance network of Shen et al.'s Table 6 (5.5 % for |T| = 10).
CLIP_B16 = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=16, projection_dim=512
)
CFG = 7.5


class NaiveAugmentedLoss:
    """The loss over `copies` augmented views, scored one view per loss call (what a straightforward
    implementation does), averaged. Steer itself batches the views through one call."""

    def __init__(self, loss, copies: int):
        self.loss, self.copies, self.name = loss, copies, loss.name
        self.augment = RandomAugment(AugmentConfig(copies=1))

    def __call__(self, images):
        return sum(augmented_loss(self.loss, images, self.augment) for _ in range(self.copies)) / self.copies


class Bench:
    """The models, built once: ComfyUI's patcher and VAE, the CLIP loss, conditioning and latents."""

    def __init__(self, latent: int, workdir: Path):
        comfy_sd()
        import comfy.model_management
        import comfy.samplers
        import comfy.sd
        import folder_paths

        self.comfy_sd, self.samplers, self.mm = comfy.sd, comfy.samplers, comfy.model_management
        import comfy as comfy_pkg
        import comfy.ldm.models.autoencoder  # noqa: F401  (the fixture builders reach these as comfy_pkg.*)
        import comfy.ldm.modules.diffusionmodules.openaimodel  # noqa: F401
        import comfy.model_detection  # noqa: F401
        import comfy.ops  # noqa: F401
        import comfy.supported_models  # noqa: F401

        from . import random_checkpoints as fixture

        began = time.perf_counter()
        torch.manual_seed(0)
        self.model = self._build_unet(comfy_pkg, fixture)
        self.unet_parameters = sum(p.numel() for p in self.model.model.diffusion_model.parameters())
        torch.manual_seed(1)
        vae_sd = {k.removeprefix("first_stage_model."): v for k, v in fixture.build_vae_state_dict(comfy_pkg).items()}
        self.vae = comfy.sd.VAE(sd=vae_sd)
        del vae_sd
        self._write_taesd(comfy_pkg, fixture, workdir / "vae_approx")
        folder_paths.add_model_folder_path("vae_approx", str(workdir / "vae_approx"))
        self.loss = self._clip_loss(workdir / "clip_b16")
        self.build_seconds = time.perf_counter() - began

        device = self.mm.get_torch_device()
        generator = torch.Generator().manual_seed(0)
        self.positive = [[torch.randn(1, 77, 768, generator=generator), {}]]
        self.negative = [[torch.randn(1, 77, 768, generator=generator), {}]]
        self.noise = torch.randn(1, 4, latent, latent, generator=generator)
        self.latent = torch.zeros(1, 4, latent, latent)
        schedule = comfy.samplers.calculate_sigmas(self.model.get_model_object("model_sampling"), "normal", 20).cpu()
        self.sigmas = schedule[8:11]  # two steps from the middle of a 20-step schedule
        self.device = device

    def _build_unet(self, comfy_pkg, fixture):
        model_config = comfy_pkg.model_detection.model_config_from_unet_config(dict(SD15_UNET_CONFIG))
        unet = comfy_pkg.ldm.modules.diffusionmodules.openaimodel.UNetModel(
            **model_config.unet_config, operations=comfy_pkg.ops.disable_weight_init
        )
        fixture.init_randomly(unet)
        state = unet.state_dict()
        del unet
        patcher = self.comfy_sd.load_diffusion_model_state_dict(state)
        if patcher is None or type(patcher.model.model_config).__name__ != "SD15":
            raise SteerError("ComfyUI did not detect the benchmark UNet as SD1.5")
        return patcher

    @staticmethod
    def _write_taesd(comfy_pkg, fixture, folder: Path):
        from comfy.taesd.taesd import Decoder
        from safetensors.torch import save_file

        torch.manual_seed(2)
        decoder = Decoder(latent_channels=4)
        fixture.init_randomly(decoder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(folder / "taesd_decoder.safetensors"))

    @staticmethod
    def _clip_loss(folder: Path):
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        from ..guidance.hf_models import load_guidance_model
        from ..guidance.losses.clip import CLIPImageLoss, HFCLIPEncoder

        torch.manual_seed(3)
        folder.mkdir(parents=True, exist_ok=True)
        CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_B16)).eval().save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(
            json.dumps(
                {
                    "image_processor_type": "CLIPImageProcessor",
                    "do_resize": True,
                    "size": {"shortest_edge": 224},
                    "do_center_crop": True,
                    "crop_size": {"height": 224, "width": 224},
                    "do_rescale": True,
                    "rescale_factor": 1 / 255,
                    "do_normalize": True,
                    "image_mean": [0.4815, 0.4578, 0.4082],
                    "image_std": [0.2686, 0.2613, 0.2758],
                    "resample": 3,
                }
            )
        )
        encoder = HFCLIPEncoder(load_guidance_model(folder, precision="auto"))
        return CLIPImageLoss(encoder, torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(4)))

    def sampler(self, mode: Mode):
        if mode.config is None:
            return self.samplers.sampler_object("euler")
        from ..guidance.trace import GuidanceTrace
        from ..nodes.comfy_guidance import make_sampler

        loss = NaiveAugmentedLoss(self.loss, mode.naive_augment) if mode.naive_augment else self.loss
        return make_sampler(
            self.vae, loss, mode.config, GuidanceTrace(label=mode.name), loss_decoder=mode.loss_decoder, checkpointing=mode.checkpointing
        )

    def seconds_per_step(self, mode: Mode) -> float:
        guider = self.samplers.CFGGuider(self.model)
        guider.set_conds(self.positive, self.negative)
        guider.set_cfg(CFG)
        sampler = self.sampler(mode)
        with torch.inference_mode():
            synchronize(self.device)
            began = time.perf_counter()
            guider.sample(self.noise, self.latent, sampler, self.sigmas, disable_pbar=True, seed=0)
            synchronize(self.device)
        return (time.perf_counter() - began) / (len(self.sigmas) - 1)


NEEDS_COMFYUI = "steer bench runs the models through ComfyUI's own loaders and samplers: set COMFYUI_PATH to a ComfyUI checkout"


def comfy_sd():
    from ..cli.comfy_bootstrap import import_comfyui

    return import_comfyui(missing=NEEDS_COMFYUI)
