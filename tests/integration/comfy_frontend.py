"""Drive ComfyUI's real frontend (comfyui-frontend-package) in headless Chromium through Playwright.

Chromium is Debian's `chromium` package at /usr/bin/chromium (or STEER_CHROMIUM); Playwright is only
the Python driver and never downloads a browser. Used by the browser test and by
build_workflows.py, the tool that turns an API-format workflow into the shared UI-format file.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import requests

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Chromium flags for this closed, GPU-less machine (see the machine notes): no sandbox as root, no
# GPU, and no background connections that the closed network would refuse.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
APP_READY_TIMEOUT_MS = 180_000

# Runs in the page: build the graph of an API-format workflow with the LiteGraph API (as the
# frontend's own loadApiJson does, minus its "arrange"), then lay it out in columns. A draft may
# place a node itself with "_meta": {"pos": [x, y], "size": [w, h]}, and may hold frontend-only
# nodes (Note, MarkdownNote with a "text" input), which the exported API twin leaves out.
BUILD_FROM_API_JS = r"""
async ({api}) => {
  const app = window.app;
  app.graph.clear();
  const ids = Object.keys(api);
  for (const id of ids) {
    const data = api[id];
    const node = LiteGraph.createNode(data.class_type);
    if (!node) throw new Error("the frontend has no node type " + data.class_type);
    node.id = Number(id);
    if (data._meta?.title) node.title = data._meta.title;
    app.graph.add(node);
    if (data._meta?.size) node.setSize(data._meta.size);
    if (data._meta?.pos) node.pos = data._meta.pos;
  }
  for (const id of ids) {
    const data = api[id];
    const node = app.graph.getNodeById(Number(id));
    for (const [name, value] of Object.entries(data.inputs ?? {})) {
      if (Array.isArray(value)) {
        const from = app.graph.getNodeById(Number(value[0]));
        const slot = (node.inputs ?? []).findIndex((input) => input.name === name);
        if (!from || slot < 0) throw new Error(`cannot link ${data.class_type}.${name} to ${value}`);
        from.connect(value[1], node, slot);
      } else {
        const widget = node.widgets?.find((w) => w.name === name);
        if (!widget) throw new Error(`${data.class_type} has no widget ${name}`);
        widget.value = value;
      }
    }
  }
  // Layout: a column per longest-path depth; a node with no inputs sits just left of its first consumer.
  const nodes = app.graph.nodes;
  const sources = new Map(nodes.map((n) => [n.id, []]));
  const consumers = new Map(nodes.map((n) => [n.id, []]));
  for (const link of Object.values(app.graph.links ?? {})) {
    if (!link) continue;
    sources.get(link.target_id).push(link.origin_id);
    consumers.get(link.origin_id).push(link.target_id);
  }
  const depth = new Map();
  const depthOf = (id) => {
    if (!depth.has(id)) {
      depth.set(id, 0);
      depth.set(id, Math.max(0, ...sources.get(id).map((s) => depthOf(s) + 1)));
    }
    return depth.get(id);
  };
  nodes.forEach((n) => depthOf(n.id));
  for (const n of nodes) {
    if (sources.get(n.id).length === 0 && consumers.get(n.id).length) {
      depth.set(n.id, Math.max(0, Math.min(...consumers.get(n.id).map((c) => depth.get(c))) - 1));
    }
  }
  const columns = [];
  for (const n of [...nodes].sort((a, b) => a.id - b.id)) {
    const size = n.computeSize();
    n.setSize([Math.max(n.size[0], size[0]), Math.max(n.size[1], size[1])]);
    if (!api[String(n.id)]?._meta?.pos) (columns[depth.get(n.id)] ??= []).push(n);
  }
  let x = 40;
  for (const column of columns) {
    if (!column) continue;
    let y = 60;
    let width = 0;
    for (const n of column) {
      n.pos = [x, y];
      y += n.size[1] + LiteGraph.NODE_TITLE_HEIGHT + 30;
      width = Math.max(width, n.size[0]);
    }
    x += width + 60;
  }
  app.graph.setDirtyCanvas(true, true);
  const prompt = await app.graphToPrompt();
  return {workflow: JSON.stringify(prompt.workflow), api: JSON.stringify(prompt.output)};
}
"""


def chromium_path() -> str | None:
    candidates = [os.environ["STEER_CHROMIUM"]] if os.environ.get("STEER_CHROMIUM") else list(CHROMIUM_PATHS)
    return next((path for path in candidates if Path(path).is_file() and os.access(path, os.X_OK)), None)


def browser_missing_reason() -> str | None:
    """None when headless Chromium and the Playwright driver are both available, else why not."""
    if chromium_path() is None:
        where = os.environ.get("STEER_CHROMIUM") or " or ".join(CHROMIUM_PATHS)
        return f"Chromium not found at {where} (apt-get install chromium, or set STEER_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install playwright; no browser download needed)"
    return None


@contextmanager
def chromium():
    """A headless Debian Chromium driven by Playwright; yields the Browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def prepare_user_settings(base_url: str, extra: dict | None = None) -> None:
    """Mark the first-run tutorial as done, so the template browser does not cover the canvas."""
    settings = {"Comfy.TutorialCompleted": True, **(extra or {})}
    requests.post(f"{base_url}/settings", json=settings, timeout=30).raise_for_status()


def open_app(browser, base_url: str, width: int = 1400, height: int = 900):
    """A new page with the ComfyUI app loaded and its node definitions registered; returns (page, console log)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.goto(base_url + "/", wait_until="domcontentloaded")
    page.wait_for_function(
        "() => window.app && window.app.graph && window.app.canvas && window.LiteGraph"
        " && Object.keys(window.LiteGraph.registered_node_types).length > 50",
        timeout=APP_READY_TIMEOUT_MS,
    )
    return page, console


def build_from_api(page, api: dict) -> tuple[dict, dict]:
    """Build an API-format workflow's graph in the page; returns (UI workflow, API prompt) as the frontend exports them."""
    result = page.evaluate(BUILD_FROM_API_JS, {"api": api})
    return json.loads(result["workflow"]), json.loads(result["api"])


def graph_to_prompt(page) -> tuple[dict, dict]:
    """The frontend's own export of the graph on the canvas: (UI workflow, API prompt)."""
    result = page.evaluate(
        "async () => { const p = await window.app.graphToPrompt();"
        " return {workflow: JSON.stringify(p.workflow), api: JSON.stringify(p.output)}; }"
    )
    return json.loads(result["workflow"]), json.loads(result["api"])


def load_workflow(page, workflow: dict, name: str = "steer-test") -> None:
    """Open a UI-format workflow the way the app opens a file (missing-node and model checks included)."""
    page.evaluate("async ([wf, name]) => { await window.app.loadGraphData(wf, true, true, name); }", [workflow, name])


def fit_view(page) -> None:
    page.evaluate(
        "() => { const c = window.app.canvas; const nodes = window.app.graph.nodes;"
        " if (c.ds.fitToBounds && nodes.length) {"
        "   const xs = nodes.flatMap((n) => [n.pos[0], n.pos[0] + n.size[0]]);"
        "   const ys = nodes.flatMap((n) => [n.pos[1] - 30, n.pos[1] + n.size[1]]);"
        "   const x0 = Math.min(...xs), y0 = Math.min(...ys);"
        "   c.ds.fitToBounds([x0, y0, Math.max(...xs) - x0, Math.max(...ys) - y0], {zoom: 0.95});"
        " }"
        " c.setDirty(true, true); c.draw(true, true); }"
    )


def graph_screen_box(page, margin: int = 0) -> dict:
    """The nodes' bounding box on screen (CSS pixels), for a screenshot clip of the graph only."""
    box = page.evaluate(
        "() => { const c = window.app.canvas, ds = c.ds, r = c.canvas.getBoundingClientRect();"
        " const nodes = window.app.graph.nodes;"
        " const xs = nodes.flatMap((n) => [n.pos[0], n.pos[0] + n.size[0]]);"
        " const ys = nodes.flatMap((n) => [n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT, n.pos[1] + n.size[1]]);"
        " const sx = (x) => r.left + (x + ds.offset[0]) * ds.scale, sy = (y) => r.top + (y + ds.offset[1]) * ds.scale;"
        " return [sx(Math.min(...xs)), sy(Math.min(...ys)), sx(Math.max(...xs)), sy(Math.max(...ys))]; }"
    )
    viewport = page.viewport_size
    x0, y0 = max(0, box[0] - margin), max(0, box[1] - margin)
    x1, y1 = min(viewport["width"], box[2] + margin), min(viewport["height"], box[3] + margin)
    return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
