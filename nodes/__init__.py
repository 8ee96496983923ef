"""Node registration. Each module exports its own NODE_CLASS_MAPPINGS; ids are stable once published."""
from . import guidance_nodes, loss_nodes, model_loss_nodes, personalize_nodes

_MODULES = (guidance_nodes, loss_nodes, model_loss_nodes, personalize_nodes)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in _MODULES:
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
