"""A test-only ComfyUI node pack: random-weight models of every family, built in the server's process.

`Steer Test Family` outputs the MODEL, VAE and positive/negative CONDITIONING of one family, from
steer.benchmarks.random_families (the families' real comfy.model_base classes with reduced configs).
The integration tests mount this folder beside the Steer pack; it is never shipped.
"""

from steer.benchmarks import random_families

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


NODE_CLASS_MAPPINGS = {"SteerTestFamily": SteerTestFamily}
