"""Node registration, V3 style: ComfyUI calls comfy_entrypoint() and registers every class it lists.

Each node module lists its classes in NODES; a node's id lives only in its schema.
"""

from comfy_api.latest import ComfyExtension, io

from . import guidance_nodes, loss_nodes, model_loss_nodes, personalize_nodes, reward_nodes

NODES: tuple[type[io.ComfyNode], ...] = (
    *guidance_nodes.NODES,
    *loss_nodes.NODES,
    *model_loss_nodes.NODES,
    *reward_nodes.NODES,
    *personalize_nodes.NODES,
)


class SteerExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> SteerExtension:
    return SteerExtension()
