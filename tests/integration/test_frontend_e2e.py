"""The shared workflows in ComfyUI's real frontend, in headless Debian Chromium driven by Playwright.

Each workflow is opened the way the template browser opens it (from the pack's workflows/ folder as
the server serves it): no "missing nodes" dialog, every Steer node drawn with its widgets holding the
file's values, and the frontend's own API export equal to the API twin. The colour workflow is then
queued with the Run button, and the test waits for the saved image to show in the Save Image node
and keeps a screenshot in test-artifacts/.
"""

import random

import pytest
import requests
from comfy_frontend import browser_missing_reason, chromium, fit_view, graph_to_prompt, load_workflow, open_app, prepare_user_settings
from comfy_server import CHECKPOINT_NAME, REPO_ROOT
from workflow_files import NAMES, TEST_SIZE, api_workflow, stage_for_workflows, ui_workflow

from steer.batch.ui_workflow import widget_values
from steer.batch.workflow import VIRTUAL_NODE_TYPES, ObjectInfo, diff_api

ARTIFACTS = REPO_ROOT / "test-artifacts"
RUN_IN_BROWSER = "color_guidance"
MISSING_NODES_TEXT = "the following node types were not found"

_reason = browser_missing_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


@pytest.fixture(scope="module")
def templates(comfy):
    """The pack's name in /workflow_templates (the folder name it is mounted under)."""
    listed = requests.get(f"{comfy.base_url}/workflow_templates", timeout=30).json()
    return next(key for key, names in listed.items() if set(NAMES) <= set(names))


@pytest.fixture(scope="module")
def page(comfy):
    stage_for_workflows(comfy)
    # A returning user: no first-run template picker; no minimap over the graph.
    prepare_user_settings(comfy.base_url, {"Comfy.Minimap.Visible": False})
    with chromium() as browser:
        page, console = open_app(browser, comfy.base_url, width=1600, height=1000)
        page.console_log = console
        yield page


def open_template(page, comfy, pack, name) -> dict:
    """Fetch workflows/NAME.json as the template browser does, and load it into the app."""
    workflow = requests.get(f"{comfy.base_url}/api/workflow_templates/{pack}/{name}.json", timeout=30).json()
    load_workflow(page, workflow, name)
    page.wait_for_timeout(500)
    return workflow


def dialogs(page) -> list[str]:
    return [text for text in page.locator(".p-dialog").all_inner_texts() if text.strip()]


def test_a_workflow_with_an_unknown_node_shows_the_missing_nodes_dialog(page, comfy, templates):
    """The detector below is real: a file naming a node type the server lacks gets the dialog."""
    workflow = ui_workflow(NAMES[0])
    workflow["nodes"][0]["type"] = "SteerNoSuchNode"
    load_workflow(page, workflow)
    page.wait_for_timeout(500)
    texts = dialogs(page)
    assert any(MISSING_NODES_TEXT in text and "SteerNoSuchNode" in text for text in texts), texts
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    assert not dialogs(page)


@pytest.mark.parametrize("name", NAMES)
def test_workflow_opens_with_no_missing_nodes_and_steer_widgets(page, comfy, templates, name):
    workflow = open_template(page, comfy, templates, name)
    assert not dialogs(page), dialogs(page)
    info = ObjectInfo(comfy.object_info())
    drawn = {
        str(node["id"]): node
        for node in page.evaluate(
            "() => app.graph.nodes.map((n) => ({id: n.id, type: n.type, size: [...n.size],"
            " widgets: (n.widgets ?? []).map((w) => [w.name, w.value])}))"
        )
    }
    steer_nodes = [node for node in workflow["nodes"] if node["type"].startswith("Steer")]
    assert steer_nodes
    for node in workflow["nodes"]:
        shown = drawn[str(node["id"])]
        assert shown["type"] == node["type"] and shown["size"][0] > 0 and shown["size"][1] > 0
        if node["type"] in VIRTUAL_NODE_TYPES or node["type"] not in info:
            continue
        spec = info.spec(node["type"])
        widgets = dict(shown["widgets"])
        for widget in spec.widgets:  # a widget for every widget input, holding the file's value
            assert widget.name in widgets, f"{node['type']} shows no {widget.name} widget; it shows {list(widgets)}"
        for input_name, value in widget_values(node, spec).items():
            assert widgets[input_name] == value, (node["type"], input_name, widgets[input_name], value)
    # What the frontend would send is the API twin.
    _, exported = graph_to_prompt(page)
    assert not diff_api(exported, api_workflow(name), ("frontend export", f"api/{name}.json"))


def test_queue_from_the_run_button_and_see_the_image(page, comfy, templates):
    workflow = open_template(page, comfy, templates, RUN_IN_BROWSER)
    save_id = next(node["id"] for node in workflow["nodes"] if node["type"] == "SaveImage")
    noise_id = str(next(node["id"] for node in workflow["nodes"] if node["type"] == "RandomNoise"))
    seed = random.randrange(1, 2**31)  # a fresh seed, so the server really runs it
    # As a user would: pick the checkpoint from the list, shrink the image and the step count.
    page.evaluate(
        """([ckpt, size, seed]) => {
          const set = (type, name, value) => {
            for (const node of app.graph.nodes.filter((n) => n.type === type)) {
              const widget = node.widgets.find((w) => w.name === name);
              widget.value = value;
              widget.callback?.(value);
            }
          };
          set("CheckpointLoaderSimple", "ckpt_name", ckpt);
          set("EmptyLatentImage", "width", size);
          set("EmptyLatentImage", "height", size);
          set("BasicScheduler", "steps", 2);
          set("SteerGuidedSampler", "preset", "mpgd");
          set("RandomNoise", "noise_seed", seed);
          app.graph.setDirtyCanvas(true, true);
        }""",
        [CHECKPOINT_NAME, TEST_SIZE, seed],
    )
    fit_view(page)
    prompts_before = len(requests.get(f"{comfy.base_url}/history", timeout=30).json())
    page.locator('[data-testid="queue-button"]').click()

    # The Save Image node shows the new picture once it has run and the browser has loaded it.
    page.wait_for_function(
        """(id) => {
          app.graph.setDirtyCanvas(true, true);
          const node = app.graph.getNodeById(id);
          return node?.imgs?.length > 0 && node.imgs[0].complete && node.imgs[0].naturalWidth > 0;
        }""",
        arg=save_id,
        timeout=600_000,
        polling=500,
    )
    shown = page.evaluate("(id) => app.graph.getNodeById(id).imgs.map((img) => [img.src, img.naturalWidth, img.naturalHeight])", save_id)
    assert shown[0][1:] == [TEST_SIZE, TEST_SIZE] and "type=output" in shown[0][0]
    history = requests.get(f"{comfy.base_url}/history", timeout=30).json()
    assert len(history) == prompts_before + 1  # queued from the button, once
    (entry,) = [e for e in history.values() if e["prompt"][2].get(noise_id, {}).get("inputs", {}).get("noise_seed") == seed]
    assert entry["status"]["status_str"] == "success"
    assert not dialogs(page), dialogs(page)

    page.wait_for_timeout(500)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / f"frontend_{RUN_IN_BROWSER}.png"
    page.screenshot(path=str(screenshot))
    print(f"\nscreenshot: {screenshot}")
