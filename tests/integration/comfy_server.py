"""Run a real ComfyUI server with the Steer pack mounted, and talk to it over HTTP and WebSocket.

Modelled on ComfyUI's own tests/execution/test_execution.py: `main.py` runs as a subprocess on a
loopback port; `--extra-model-paths-config` points it at a throw-away base directory holding the
models and a `custom_nodes/steer` symlink to this repo. Prompts are POSTed in API format and
their events are read from the WebSocket.

This module never imports ComfyUI: the test process only speaks HTTP to it.
"""

from __future__ import annotations

import copy
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests
import websocket  # websocket-client

DEFAULT_COMFYUI_PATH = "/opt/ComfyUI"
CHECKPOINT_NAME = "steer_tiny_sd15.safetensors"
PACK_NAME = "steer"
TEST_PACK_NAME = "steer_test_families"  # tests/integration/family_pack: random-weight models of every family
REPO_ROOT = Path(__file__).resolve().parents[2]
# Model folders the pack's nodes read or write; each gets an empty directory in the base dir.
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "loras", "embeddings", "clip_vision", "vae_approx", "steer")


def comfyui_path() -> Path:
    return Path(os.environ.get("COMFYUI_PATH", DEFAULT_COMFYUI_PATH))


def run_script(script: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Runs a helper script that imports ComfyUI in its own process (the pytest process must never
    get ComfyUI's top-level `nodes` module), offline; raises with its output if it fails."""
    completed = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        env={**os.environ, "COMFYUI_PATH": str(comfyui_path()), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if completed.returncode != 0:
        raise AssertionError(
            f"{Path(script).name} {' '.join(map(str, args))} failed (exit {completed.returncode}):\n"
            f"{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"
        )
    return completed


def comfyui_missing_reason() -> str | None:
    """None when a ComfyUI checkout is available, else the one-line reason to skip."""
    path = comfyui_path()
    if not (path / "main.py").is_file():
        return f"ComfyUI not found at {path} (set COMFYUI_PATH)"
    missing = missing_requirements(path / "requirements.txt")
    if missing:
        return f"ComfyUI at {path} needs packages this Python lacks ({', '.join(missing)}): pip install -r {path / 'requirements.txt'}"
    return None


# ComfyUI starts without these (it logs a warning and disables the models that need them).
OPTIONAL_COMFYUI_REQUIREMENTS = {"torchaudio"}


def missing_requirements(requirements: Path) -> list[str]:
    """Distributions named in a requirements file that are not installed for this interpreter."""
    import importlib.metadata
    import re

    if not requirements.is_file():
        return []
    missing = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]
        if name.lower() in OPTIONAL_COMFYUI_REQUIREMENTS:
            continue
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


# --------------------------------------------------------------------------------------------
# API-format prompt builder


@dataclass
class NodeRef:
    """One node of a PromptBuilder; pass `ref.out(i)` (or `ref` itself for output 0) as an input."""

    id: str
    class_type: str
    inputs: dict

    def out(self, index: int = 0) -> list:
        return [self.id, index]


class PromptBuilder:
    """A dict-based stand-in for ComfyUI's comfy_execution.graph_utils.GraphBuilder.

    builder = PromptBuilder()
    ckpt = builder.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT_NAME)
    builder.node("CLIPTextEncode", clip=ckpt.out(1), text="a cat")
    client.run(builder.prompt())
    """

    def __init__(self):
        self.nodes: dict[str, NodeRef] = {}
        self._next_id = 1

    def node(self, class_type: str, node_id: str | None = None, **inputs) -> NodeRef:
        if node_id is None:
            while str(self._next_id) in self.nodes:
                self._next_id += 1
            node_id = str(self._next_id)
        node_id = str(node_id)
        if node_id in self.nodes:
            raise ValueError(f"node id {node_id!r} is already used")
        ref = NodeRef(node_id, class_type, dict(inputs))
        self.nodes[node_id] = ref
        return ref

    def prompt(self) -> dict:
        def encode(value):
            return value.out(0) if isinstance(value, NodeRef) else copy.deepcopy(value)

        return {
            ref.id: {"class_type": ref.class_type, "inputs": {k: encode(v) for k, v in ref.inputs.items()}} for ref in self.nodes.values()
        }


def txt2img_prompt(
    positive: str = "a red apple on a wooden table",
    negative: str = "",
    width: int = 64,
    height: int = 64,
    steps: int = 4,
    cfg: float = 4.0,
    sampler_name: str = "euler",
    scheduler: str = "normal",
    seed: int = 0,
    filename_prefix: str = "steer_test",
) -> tuple[PromptBuilder, dict[str, NodeRef]]:
    """The stock text-to-image graph on the tiny checkpoint, returned as (builder, nodes by role)
    so a test can swap a node (e.g. the sampler) before calling builder.prompt()."""
    builder = PromptBuilder()
    checkpoint = builder.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT_NAME)
    positive_cond = builder.node("CLIPTextEncode", clip=checkpoint.out(1), text=positive)
    negative_cond = builder.node("CLIPTextEncode", clip=checkpoint.out(1), text=negative)
    latent = builder.node("EmptyLatentImage", width=width, height=height, batch_size=1)
    sampler = builder.node(
        "KSampler",
        model=checkpoint.out(0),
        positive=positive_cond.out(0),
        negative=negative_cond.out(0),
        latent_image=latent.out(0),
        seed=seed,
        steps=steps,
        cfg=cfg,
        sampler_name=sampler_name,
        scheduler=scheduler,
        denoise=1.0,
    )
    decode = builder.node("VAEDecode", samples=sampler.out(0), vae=checkpoint.out(2))
    save = builder.node("SaveImage", images=decode.out(0), filename_prefix=filename_prefix)
    nodes = {
        "checkpoint": checkpoint,
        "positive": positive_cond,
        "negative": negative_cond,
        "latent": latent,
        "sampler": sampler,
        "decode": decode,
        "save": save,
    }
    return builder, nodes


# --------------------------------------------------------------------------------------------
# Results and errors


class PromptRejected(Exception):
    """POST /prompt answered 400: the prompt failed validation."""

    def __init__(self, error: dict, node_errors: dict):
        self.error = error
        self.node_errors = node_errors
        super().__init__(f"prompt rejected: {json.dumps(error)}; node_errors: {json.dumps(node_errors)}")


class ExecutionFailed(Exception):
    """A node raised while the prompt ran (the `execution_error` WebSocket event)."""

    def __init__(self, result: RunResult):
        self.result = result
        data = result.error or {}
        self.node_id = data.get("node_id")
        self.node_type = data.get("node_type")
        self.exception_type = data.get("exception_type")
        self.exception_message = data.get("exception_message", "")
        traceback_text = "".join(data.get("traceback") or [])
        super().__init__(f"node {self.node_id} ({self.node_type}) raised {self.exception_type}: {self.exception_message}\n{traceback_text}")


class ExecutionInterrupted(Exception):
    def __init__(self, result: RunResult):
        self.result = result
        super().__init__(f"prompt {result.prompt_id} was interrupted")


@dataclass
class RunResult:
    prompt_id: str
    status: str  # "success", "error" or "interrupted"
    events: list[dict] = field(default_factory=list)  # {"type", "data"} in arrival order
    outputs: dict = field(default_factory=dict)  # /history outputs, by node id
    history: dict = field(default_factory=dict)
    error: dict | None = None  # data of the execution_error event

    def events_of(self, event_type: str) -> list[dict]:
        return [event["data"] for event in self.events if event["type"] == event_type]

    @property
    def executed_nodes(self) -> list[str]:
        """Node ids in the order they started running (cached nodes are not listed)."""
        return [data["node"] for data in self.events_of("executing") if data.get("node") is not None]

    @property
    def cached_nodes(self) -> set[str]:
        return {node for data in self.events_of("execution_cached") for node in data.get("nodes", [])}

    def progress(self, node_id: str) -> list[tuple[float, float]]:
        """(value, max) of every `progress` event a node sent, e.g. one per sampling step."""
        return [(data["value"], data["max"]) for data in self.events_of("progress") if data.get("node") == node_id]

    @property
    def progress_nodes(self) -> set[str]:
        return {data.get("node") for data in self.events_of("progress")}


# --------------------------------------------------------------------------------------------
# The client


class ComfyClient:
    """HTTP + WebSocket client for one running server.

    The WebSocket is opened at construction, before anything is queued, so no event is missed.
    Events are buffered per prompt id, so prompts can be waited on in any order.
    """

    def __init__(self, host: str, port: int, base_dir: Path, log_path: Path, process: subprocess.Popen | None = None):
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.base_dir = Path(base_dir)
        self.models_dir = self.base_dir / "models"
        self.output_dir = self.base_dir / "output"
        self.input_dir = self.base_dir / "input"
        self.log_path = Path(log_path)
        self.process = process
        self.client_id = uuid.uuid4().hex
        self.http = requests.Session()
        self._events_by_prompt: dict[str, list[dict]] = {}
        self._finished_prompts: set[str] = set()
        self.ws = websocket.create_connection(f"ws://{host}:{port}/ws?clientId={self.client_id}", timeout=30)

    def close(self):
        self.ws.close()
        self.http.close()

    # ---- plain HTTP

    def object_info(self, node_class: str | None = None) -> dict:
        url = f"{self.base_url}/object_info" + (f"/{node_class}" if node_class else "")
        response = self.http.get(url, timeout=60)
        response.raise_for_status()
        return response.json()

    def queue(self, prompt: dict, extra_data: dict | None = None) -> str:
        """POST the API-format prompt; returns its prompt id. Raises PromptRejected on validation errors."""
        body = {"prompt": prompt, "client_id": self.client_id, "prompt_id": str(uuid.uuid4())}
        if extra_data:
            body["extra_data"] = extra_data
        # json.dumps, not requests' json=: hostile prompts carry NaN and Infinity, which requests refuses to send.
        response = self.http.post(
            f"{self.base_url}/prompt", data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=60
        )
        if response.status_code == 400:
            payload = response.json()
            raise PromptRejected(payload.get("error", {}), payload.get("node_errors", {}))
        response.raise_for_status()
        return response.json()["prompt_id"]

    def history(self, prompt_id: str) -> dict:
        response = self.http.get(f"{self.base_url}/history/{prompt_id}", timeout=30)
        response.raise_for_status()
        return response.json().get(prompt_id, {})

    def interrupt(self) -> None:
        self.http.post(f"{self.base_url}/interrupt", timeout=30).raise_for_status()

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        body = {"unload_models": unload_models, "free_memory": free_memory}
        self.http.post(f"{self.base_url}/free", json=body, timeout=30).raise_for_status()

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        params = {"filename": filename, "subfolder": subfolder, "type": folder_type}
        response = self.http.get(f"{self.base_url}/view", params=params, timeout=60)
        response.raise_for_status()
        return response.content

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ---- running prompts

    def pump_events(self, timeout: float = 1.0) -> None:
        """Read and buffer WebSocket events for up to `timeout` s (to watch a running prompt)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self._receive_one(remaining)

    def seen_events(self, prompt_id: str) -> list[dict]:
        """Events buffered so far for a prompt that has not been `wait`ed on yet."""
        return list(self._events_by_prompt.get(prompt_id, []))

    def seen_progress(self, prompt_id: str, node_id: str) -> bool:
        return any(
            event["type"] == "progress" and event["data"].get("node") == str(node_id) for event in self._events_by_prompt.get(prompt_id, [])
        )

    def wait(self, prompt_id: str, timeout: float = 120) -> RunResult:
        """Collect the prompt's WebSocket events until it finishes, then read its history.

        Does not raise on execution errors (see `run`); raises TimeoutError if it does not finish.
        """
        deadline = time.monotonic() + timeout
        while prompt_id not in self._finished_prompts:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s\n{self.log_tail()}")
            self._receive_one(remaining)

        events = self._events_by_prompt.pop(prompt_id, [])
        self._finished_prompts.discard(prompt_id)
        history = self._history_when_written(prompt_id, deadline)
        types = {event["type"] for event in events}
        if "execution_error" in types:
            status = "error"
        elif "execution_interrupted" in types:
            status = "interrupted"
        else:
            status = "success"
        error = next((event["data"] for event in events if event["type"] == "execution_error"), None)
        return RunResult(prompt_id, status, events, history.get("outputs", {}), history, error)

    def run(self, prompt: dict, timeout: float = 120) -> RunResult:
        """queue + wait; raises ExecutionFailed / ExecutionInterrupted unless the prompt succeeded."""
        result = self.wait(self.queue(prompt), timeout)
        if result.status == "error":
            raise ExecutionFailed(result)
        if result.status == "interrupted":
            raise ExecutionInterrupted(result)
        return result

    def images(self, result: RunResult, node_id: str | None = None) -> list:
        """The images the prompt's output nodes (SaveImage, PreviewImage…) produced, as PIL images."""
        from PIL import Image

        images = []
        for output_node_id, output in result.outputs.items():
            if node_id is not None and output_node_id != str(node_id):
                continue
            for entry in output.get("images", []):
                data = self.view(entry["filename"], entry.get("subfolder", ""), entry.get("type", "output"))
                image = Image.open(io.BytesIO(data))
                image.load()
                images.append(image)
        return images

    def _receive_one(self, timeout: float) -> None:
        """Wait up to `timeout` s (at most 5) for one WebSocket frame and buffer it."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited (code {self.process.returncode})\n{self.log_tail()}")
        self.ws.settimeout(max(0.01, min(timeout, 5.0)))
        try:
            frame = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return
        if isinstance(frame, str):  # binary frames are preview images
            self._record(json.loads(frame))

    def _record(self, message: dict) -> None:
        data = message.get("data") or {}
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        if prompt_id is None:
            return  # queue status and the like
        self._events_by_prompt.setdefault(prompt_id, []).append({"type": message["type"], "data": data})
        # The worker sends `executing` with node None after it wrote the history entry.
        if message["type"] == "executing" and data.get("node") is None:
            self._finished_prompts.add(prompt_id)

    def _history_when_written(self, prompt_id: str, deadline: float) -> dict:
        while True:
            history = self.history(prompt_id)
            if history or time.monotonic() > deadline:
                return history
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# The server


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare_base_dir(base_dir: Path, checkpoint_path: Path, pack_root: Path = REPO_ROOT) -> Path:
    """Lay out models, custom_nodes and in/out folders; returns the extra_model_paths yaml."""
    base_dir = Path(base_dir)
    models_dir = base_dir / "models"
    for folder in MODEL_FOLDERS:
        (models_dir / folder).mkdir(parents=True, exist_ok=True)
    checkpoint_link = models_dir / "checkpoints" / CHECKPOINT_NAME
    if not checkpoint_link.is_symlink() and not checkpoint_link.exists():
        checkpoint_link.symlink_to(Path(checkpoint_path).resolve())
    (base_dir / "custom_nodes").mkdir(exist_ok=True)
    pack_link = base_dir / "custom_nodes" / PACK_NAME
    if not pack_link.is_symlink() and not pack_link.exists():
        pack_link.symlink_to(Path(pack_root).resolve(), target_is_directory=True)
    test_pack_link = base_dir / "custom_nodes" / TEST_PACK_NAME
    if not test_pack_link.is_symlink() and not test_pack_link.exists():
        test_pack_link.symlink_to(Path(__file__).resolve().with_name("family_pack"), target_is_directory=True)
    for folder in ("output", "input", "temp", "user"):
        (base_dir / folder).mkdir(exist_ok=True)

    # is_default puts these folders first, so anything a node saves (LoRAs, embeddings…) lands
    # in this throw-away dir rather than in the ComfyUI checkout. JSON strings are valid YAML.
    yaml_lines = ["steer_tests:", f"    base_path: {json.dumps(str(base_dir))}", "    is_default: true"]
    yaml_lines += [f"    {folder}: models/{folder}" for folder in MODEL_FOLDERS]
    yaml_lines += ["    custom_nodes: custom_nodes"]
    yaml_path = base_dir / "extra_model_paths.yaml"
    yaml_path.write_text("\n".join(yaml_lines) + "\n")
    return yaml_path


def _die_with_parent():
    """Ask Linux to SIGTERM the server if the test process dies without tearing it down."""
    try:
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except Exception:
        pass


class ComfyServer:
    """A `main.py --cpu` subprocess on a free loopback port, logging to base_dir/comfyui.log."""

    def __init__(self, base_dir: Path, checkpoint_path: Path, extra_args: tuple[str, ...] = ()):
        self.base_dir = Path(base_dir)
        self.checkpoint_path = Path(checkpoint_path)
        self.extra_args = tuple(extra_args)
        self.host = "127.0.0.1"
        self.port = free_loopback_port()
        self.log_path = self.base_dir / "comfyui.log"
        self.process: subprocess.Popen | None = None
        self.client: ComfyClient | None = None
        self.startup_seconds: float | None = None

    def command(self, yaml_path: Path) -> list[str]:
        return [
            sys.executable,
            "main.py",
            "--cpu",
            "--listen",
            self.host,
            "--port",
            str(self.port),
            "--extra-model-paths-config",
            str(yaml_path),
            "--output-directory",
            str(self.base_dir / "output"),
            "--input-directory",
            str(self.base_dir / "input"),
            "--temp-directory",
            str(self.base_dir / "temp"),
            # Keep settings and the asset database out of the ComfyUI checkout. The DB URL must be
            # given too: its default is derived from the checkout's user/ folder, not --user-directory.
            "--user-directory",
            str(self.base_dir / "user"),
            "--database-url",
            f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}",
            "--disable-auto-launch",
            *self.extra_args,
        ]

    def start(self, timeout: float = 180) -> ComfyClient:
        yaml_path = prepare_base_dir(self.base_dir, self.checkpoint_path)
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            # Tests must never download anything from a model hub.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        started = time.monotonic()
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                self.command(yaml_path),
                cwd=str(comfyui_path()),
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        self._wait_until_ready(started + timeout)
        self.startup_seconds = time.monotonic() - started
        self.client = ComfyClient(self.host, self.port, self.base_dir, self.log_path, self.process)
        return self.client

    def _wait_until_ready(self, deadline: float) -> None:
        url = f"http://{self.host}:{self.port}/object_info"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited during startup (code {self.process.returncode}); log tail:\n{self._log_tail()}")
            try:
                # The port only opens after every node (built-in and custom) has been imported.
                if requests.get(url, timeout=30).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"ComfyUI did not answer {url} in time; log tail:\n{self._log_tail()}")
            time.sleep(0.5)

    def _log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
