"""Steer: training-free loss-guided sampling and AttnDreamBooth personalization for ComfyUI.

ComfyUI loads this folder from custom_nodes/<any name>/. Outside ComfyUI (pip install, tests,
the `steer` command) the algorithms in guidance/ and personalize/ import on their own and no
node is registered.
"""
import importlib.util

if importlib.util.find_spec("comfy") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
