"""Steer: training-free loss-guided sampling and AttnDreamBooth personalization for ComfyUI.

ComfyUI loads this folder from custom_nodes/<any name>/ and registers the nodes that
comfy_entrypoint() lists (V3 node schema). The module must not define NODE_CLASS_MAPPINGS:
ComfyUI's loader reads that V1 mapping when it exists and then never calls comfy_entrypoint.
Outside ComfyUI (pip install, tests, the `steer` command) the algorithms in guidance/ and
personalize/ import on their own and no node is registered.
"""

import importlib.util

if importlib.util.find_spec("comfy") is not None and importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
else:
    __all__ = []
