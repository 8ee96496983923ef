"""A test-only ComfyUI node pack: random-weight models of every family, built in the server's process.

`Steer Test Family` outputs the MODEL, VAE and positive/negative CONDITIONING of one family, from
steer.benchmarks.random_families (the families' real comfy.model_base classes with reduced configs).
`Steer Test SDXL Trainable` outputs a tiny SDXL MODEL with ComfyUI's SDXL CLIP layout (CLIP-L and
CLIP-G, reading models/embeddings) and a VAE, from steer.benchmarks.comfy_tiny_sdxl, for AttnDreamBooth.
The integration tests mount this folder beside the Steer pack; it is never shipped.
"""

import folder_paths

from steer.benchmarks import comfy_tiny_sdxl, random_families

_built: dict = {}


class SteerTestFamily:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (list(random_families.FAMILIES),)}}

    RETURN_TYPES = ("MODEL", "VAE", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("model", "vae", "positive", "negative")
    FUNCTION = "build"
    CATEGORY = "testing"

    def build(self, family):
        if family not in _built:
            spec = random_families.FAMILIES[family]
            _built[family] = (random_families.build_model(family), random_families.build_vae(spec.latent_channels))
        model, vae = _built[family]
        return model, vae, random_families.conditioning(family, seed=1), random_families.conditioning(family, seed=2)


class SteerTestSDXLTrainable:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    RETURN_NAMES = ("model", "clip", "vae")
    FUNCTION = "build"
    CATEGORY = "testing"

    def build(self):
        if "sdxl_trainable" not in _built:
            _, model, clip = comfy_tiny_sdxl.tiny_sdxl(0, embedding_directory=folder_paths.get_folder_paths("embeddings"))
            _built["sdxl_trainable"] = (model, clip, random_families.build_vae(4))
        return _built["sdxl_trainable"]


NODE_CLASS_MAPPINGS = {"SteerTestFamily": SteerTestFamily, "SteerTestSDXLTrainable": SteerTestSDXLTrainable}
