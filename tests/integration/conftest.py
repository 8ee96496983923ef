"""Fixtures for the tests that run against a real ComfyUI (COMFYUI_PATH, default /opt/ComfyUI).

- Without a ComfyUI checkout every test in this folder is skipped, for one stated reason.
- `tiny_checkpoint`: path of the cached random-weight SD1.5-shaped checkpoint (built once).
- `comfy`: a ComfyClient for one ComfyUI server per session, with the Steer pack mounted.
"""

import importlib.util
import os
from pathlib import Path

import pytest
from comfy_server import ComfyServer, comfyui_missing_reason

INTEGRATION_DIR = Path(__file__).resolve().parent
FIXTURES_DIR = INTEGRATION_DIR.parent / "fixtures"
SERVER_STARTUP_TIMEOUT_SECONDS = float(os.environ.get("STEER_COMFY_STARTUP_TIMEOUT", "180"))


def _load_fixture_module(name):
    # Loaded by path: tests/ is not a package, and putting the repo root on sys.path would
    # shadow names such as `nodes`.
    spec = importlib.util.spec_from_file_location(f"steer_test_fixtures_{name}", FIXTURES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config, items):
    # So `-m "not integration"` deselects this folder.
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _require_comfyui():
    # A clean skip (no traceback) for every test in this folder when ComfyUI is absent.
    reason = comfyui_missing_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    return _load_fixture_module("sd15_checkpoint").tiny_sd15_checkpoint()


@pytest.fixture(scope="session")
def comfy_server(tiny_checkpoint, tmp_path_factory):
    server = ComfyServer(tmp_path_factory.mktemp("comfy_base"), tiny_checkpoint)
    server.start(timeout=SERVER_STARTUP_TIMEOUT_SECONDS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def comfy(comfy_server):
    """The ComfyClient of the session's server (attributes base_dir, models_dir, output_dir…)."""
    return comfy_server.client
