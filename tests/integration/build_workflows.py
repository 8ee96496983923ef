"""Make and refresh the shared workflow files in workflows/, with ComfyUI's real frontend in headless Chromium.

    # a new workflow from an API-format draft (auto layout; tweak it in ComfyUI afterwards if you like):
    python tests/integration/build_workflows.py --new my_workflow --from-api draft_api.json
    # refresh every API twin (workflows/api/NAME.json) and thumbnail (workflows/NAME.jpg) from the UI files:
    python tests/integration/build_workflows.py [NAME ...] [--server http://127.0.0.1:8188] [--keep-thumbnails]
    # after a node gained an input: also re-save the UI files as the frontend saves them once loaded
    python tests/integration/build_workflows.py NAME ... --update-ui

The UI-format file workflows/NAME.json is the source of truth: the API twin is what the frontend's own
export produces from it, and the thumbnail is a screenshot of the graph. Without --server a throw-away
ComfyUI (COMFYUI_PATH) starts with this pack mounted and the tiny test checkpoint.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
WORKFLOWS_DIR = REPO_ROOT / "workflows"
THUMBNAIL_WIDTH = 720
THUMBNAIL_MAX_BYTES = 200_000
# For screenshots: no minimap or canvas statistics over the graph.
SCREENSHOT_SETTINGS = {"Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}

sys.path.insert(0, str(HERE))
import comfy_frontend as frontend  # noqa: E402


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def thumbnail(page, path: Path) -> int:
    """A JPEG screenshot of the graph (the frontend lists custom-node templates with NAME.jpg)."""
    from PIL import Image

    frontend.fit_view(page)
    time.sleep(0.5)
    png = page.screenshot(clip=frontend.graph_screen_box(page, margin=16))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((THUMBNAIL_WIDTH, round(image.height * THUMBNAIL_WIDTH / image.width)), Image.LANCZOS)
    for quality in (85, 75, 60, 45):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True)
        if buffer.tell() <= THUMBNAIL_MAX_BYTES:
            break
    path.write_bytes(buffer.getvalue())
    return buffer.tell()


def upload_inputs(base_url: str) -> None:
    """Put the example inputs (workflows/inputs/: images, and folders of images) on the server, so
    Load Image and folder loader nodes list them."""
    import requests

    inputs = WORKFLOWS_DIR / "inputs"
    for path in sorted(inputs.rglob("*")):
        if not path.is_file():
            continue
        subfolder = path.parent.relative_to(inputs).as_posix()
        data = {"overwrite": "true", **({"subfolder": subfolder} if subfolder != "." else {})}
        with open(path, "rb") as handle:
            response = requests.post(f"{base_url}/upload/image", files={"image": (path.name, handle)}, data=data, timeout=60)
        response.raise_for_status()


def missing_node_types(page, workflow: dict) -> list[str]:
    types = sorted({node["type"] for node in workflow["nodes"]})
    return page.evaluate("(types) => types.filter((t) => !(t in LiteGraph.registered_node_types))", types)


def sync(page, name: str, keep_thumbnail: bool, update_ui: bool = False) -> None:
    ui_path = WORKFLOWS_DIR / f"{name}.json"
    workflow = json.loads(ui_path.read_text())
    missing = missing_node_types(page, workflow)
    if missing:
        raise SystemExit(f"{ui_path}: the server has no node types {missing}")
    frontend.load_workflow(page, workflow)
    saved, api = frontend.graph_to_prompt(page)
    if update_ui:  # new inputs get their default values; everything else stays as it was
        saved["id"] = workflow.get("id", saved.get("id"))
        write_json(ui_path, saved)
        print(f"wrote {ui_path}")
    write_json(WORKFLOWS_DIR / "api" / f"{name}.json", api)
    print(f"wrote {WORKFLOWS_DIR / 'api' / (name + '.json')} ({len(api)} nodes)")
    jpg = WORKFLOWS_DIR / f"{name}.jpg"
    if not (keep_thumbnail and jpg.exists()):
        size = thumbnail(page, jpg)
        print(f"wrote {jpg} ({size // 1024} KB)")


def start_test_server(base_dir: Path):
    spec = importlib.util.spec_from_file_location("steer_sd15_fixture", HERE.parent / "fixtures" / "sd15_checkpoint.py")
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    from comfy_server import ComfyServer

    server = ComfyServer(base_dir, fixture.tiny_sd15_checkpoint())
    server.start()
    return server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="workflow names (default: every workflows/*.json)")
    parser.add_argument("--server", help="a running ComfyUI with this pack (default: start a throw-away one)")
    parser.add_argument("--new", metavar="NAME", help="create workflows/NAME.json from --from-api")
    parser.add_argument("--from-api", type=Path, help="API-format draft for --new")
    parser.add_argument("--keep-thumbnails", action="store_true", help="do not replace existing thumbnails")
    parser.add_argument(
        "--update-ui", action="store_true", help="re-save the UI files as the frontend saves them (after a node gained an input)"
    )
    args = parser.parse_args(argv)
    if bool(args.new) != bool(args.from_api):
        parser.error("--new and --from-api go together")
    reason = frontend.browser_missing_reason()
    if reason:
        parser.error(reason)

    server = None
    with tempfile.TemporaryDirectory(prefix="steer-build-workflows-") as tmp:
        if args.server:
            base_url = args.server.rstrip("/")
        else:
            server = start_test_server(Path(tmp))
            base_url = f"http://{server.host}:{server.port}"
        try:
            frontend.prepare_user_settings(base_url, SCREENSHOT_SETTINGS)
            upload_inputs(base_url)
            with frontend.chromium() as browser:
                page, _ = frontend.open_app(browser, base_url)
                names = args.names or sorted(path.stem for path in WORKFLOWS_DIR.glob("*.json"))
                if args.new:
                    workflow, _ = frontend.build_from_api(page, json.loads(args.from_api.read_text()))
                    workflow["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"steer/workflows/{args.new}"))
                    write_json(WORKFLOWS_DIR / f"{args.new}.json", workflow)
                    print(f"wrote {WORKFLOWS_DIR / (args.new + '.json')}")
                    names = [args.new]
                for name in names:
                    sync(page, name, args.keep_thumbnails, args.update_ui)
        finally:
            if server is not None:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
