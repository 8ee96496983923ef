"""The run's header says in one line whether the integration tests run, and if not, why.
(Only a conftest at the top of the test paths may add to the header, so it lives here.)"""

from integration.comfy_server import comfyui_missing_reason, comfyui_path


def pytest_report_header(config):
    reason = comfyui_missing_reason()
    return f"integration tests: {reason or f'ComfyUI at {comfyui_path()}'}"
