"""The harness itself: ComfyUI starts with the pack mounted and runs a stock graph end to end."""

import re

from comfy_server import CHECKPOINT_NAME, PACK_NAME, txt2img_prompt


def test_server_answers_object_info_with_stock_nodes(comfy):
    info = comfy.object_info()
    for stock_node in ("CheckpointLoaderSimple", "KSampler", "VAEDecode", "SaveImage"):
        assert stock_node in info


def test_tiny_checkpoint_is_listed(comfy):
    loader_inputs = comfy.object_info("CheckpointLoaderSimple")["CheckpointLoaderSimple"]["input"]["required"]
    assert CHECKPOINT_NAME in loader_inputs["ckpt_name"][0]


def test_steer_pack_imports_without_IMPORT_FAILED(comfy):
    """THE PACK-IMPORT CHECK: ComfyUI must import custom_nodes/steer cleanly.

    Fails while the pack's __init__ cannot import nodes/ (e.g. before NODE_CLASS_MAPPINGS exists).
    """
    pack_path_pattern = re.compile(rf"custom_nodes[/\\]{PACK_NAME}\b")
    pack_lines = [line for line in comfy.log_text().splitlines() if pack_path_pattern.search(line)]
    # ComfyUI lists every pack it tried in its "Import times for custom nodes" table.
    assert any("seconds" in line for line in pack_lines), "ComfyUI did not try to load the pack at all"
    failed_lines = [line for line in pack_lines if "IMPORT FAILED" in line or "Cannot import" in line]
    assert not failed_lines, "ComfyUI could not import the Steer pack:\n" + "\n".join(failed_lines)


def test_stock_txt2img_graph_runs(comfy):
    builder, nodes = txt2img_prompt(width=64, height=64, steps=4, sampler_name="euler", filename_prefix="smoke")
    result = comfy.run(builder.prompt(), timeout=180)

    images = comfy.images(result)
    assert len(images) == 1
    assert images[0].size == (64, 64)

    sampler_id = nodes["sampler"].id
    sampler_progress = result.progress(sampler_id)
    assert sampler_progress, f"no progress events for the KSampler node; got events for {result.progress_nodes}"
    assert sampler_progress[-1] == (4, 4)
    assert sampler_id in result.executed_nodes
