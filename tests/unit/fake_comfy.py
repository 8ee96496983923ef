"""A stand-in ComfyUI HTTP server on 127.0.0.1 for the batch queue's tests (stdlib only, no WebSocket).

It keeps a queue, "runs" each prompt for `seconds_per_job` in a worker thread, writes a /history entry
with one output image whose bytes name the prompt's seed, and serves it through /view. `die()` stops
it mid-batch, the way a crashed or unplugged server disappears; `bad_answer` makes POST /prompt answer
the way a broken server or proxy does (HTTP 500, garbage, JSON without prompt_id).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SEED_NODE = "3"
OBJECT_INFO = Path(__file__).parent / "data" / "comfy_object_info_subset.json"  # served as /object_info


def tiny_workflow(seed: int = 0) -> dict:
    """An API-format prompt: a seed node and an output node."""
    return {
        SEED_NODE: {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}, "_meta": {"title": "RandomNoise"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": [SEED_NODE, 0], "filename_prefix": "fake"}, "_meta": {"title": "Save Image"}},
    }


class FakeComfy:
    def __init__(
        self,
        seconds_per_job: float = 0.05,
        reject=None,
        fail=None,
        external_depth: int = 0,
        name: str = "fake",
        bad_answer=None,
        queue_before_bad_answer: bool = False,
    ):
        self.seconds_per_job = seconds_per_job
        self.reject = reject  # prompt -> node_errors dict (reject with 400) or None
        self.fail = fail  # prompt -> True to end it with an execution error
        self.external_depth = external_depth  # other users' prompts, counted in queue_remaining
        self.name = name
        self.bad_answer = bad_answer  # prompt -> (HTTP status, body bytes) to answer POST /prompt with, or None
        self.queue_before_bad_answer = queue_before_bad_answer  # queue the prompt all the same, then answer badly
        self.bad_answers = 0
        self.lock = threading.Condition()
        self.pending: list[tuple[str, dict]] = []
        self.running: tuple[str, dict] | None = None
        self.history: dict[str, dict] = {}
        self.accepted: list[str] = []
        self.executed: list[str] = []
        self.deleted: list[str] = []
        self.interrupted: list[str] = []
        self.on_accept = None  # callback(self, prompt_id) after a prompt is queued
        self._stop = threading.Event()
        self._started = False
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._threads = [
            threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True),
            threading.Thread(target=self._work, daemon=True),
        ]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        self._started = True
        return self

    def __exit__(self, *exc):
        self.die()

    def die(self) -> None:
        """Stop answering at once: the port closes, queued prompts are lost."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self.lock:
            self.lock.notify_all()
        if self._started:
            self._httpd.shutdown()
        self._httpd.server_close()

    # ---- the "GPU"

    def _work(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                while not self.pending and not self._stop.is_set():
                    self.lock.wait(0.1)
                if self._stop.is_set():
                    return
                self.running = self.pending.pop(0)
            prompt_id, prompt = self.running
            deadline = time.monotonic() + self.seconds_per_job
            while time.monotonic() < deadline and not self._stop.is_set() and prompt_id not in self.interrupted:
                time.sleep(0.01)
            if self._stop.is_set():
                return
            with self.lock:
                self.running = None
                self.executed.append(prompt_id)
                self.history[prompt_id] = self._entry(prompt_id, prompt)

    def _entry(self, prompt_id: str, prompt: dict) -> dict:
        if prompt_id in self.interrupted:
            return {
                "status": {"status_str": "error", "completed": False, "messages": [["execution_interrupted", {"prompt_id": prompt_id}]]},
                "outputs": {},
            }
        if self.fail and self.fail(prompt):
            error = {
                "prompt_id": prompt_id,
                "node_id": SEED_NODE,
                "node_type": "RandomNoise",
                "exception_type": "RuntimeError",
                "exception_message": "boom",
            }
            return {"status": {"status_str": "error", "completed": False, "messages": [["execution_error", error]]}, "outputs": {}}
        image = {"filename": f"{self.name}_{prompt_id}.png", "subfolder": "", "type": "output"}
        preview = {"filename": f"preview_{prompt_id}.png", "subfolder": "", "type": "temp"}
        return {
            "status": {"status_str": "success", "completed": True, "messages": [["execution_success", {"prompt_id": prompt_id}]]},
            "outputs": {"9": {"images": [image]}, "12": {"images": [preview]}},
            "prompt": [0, prompt_id, prompt, {}, ["9"]],
        }

    def queue_remaining(self) -> int:
        with self.lock:
            return len(self.pending) + (self.running is not None) + self.external_depth

    # ---- HTTP

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, payload, status=200):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _raw(self, status, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_GET(self):
                url = urlsplit(self.path)
                if url.path == "/prompt":
                    return self._json({"exec_info": {"queue_remaining": fake.queue_remaining()}})
                if url.path == "/object_info":
                    return self._json(json.loads(OBJECT_INFO.read_text()))
                if url.path == "/queue":
                    with fake.lock:
                        running = [[0, fake.running[0], {}, {}, []]] if fake.running else []
                        pending = [[i + 1, pid, {}, {}, []] for i, (pid, _) in enumerate(fake.pending)]
                        pending += [[100 + i, f"someone-else-{i}", {}, {}, []] for i in range(fake.external_depth)]
                    return self._json({"queue_running": running, "queue_pending": pending})
                if url.path.startswith("/history/"):
                    prompt_id = url.path.rsplit("/", 1)[-1]
                    with fake.lock:
                        entry = fake.history.get(prompt_id)
                    return self._json({prompt_id: entry} if entry else {})
                if url.path == "/view":
                    query = parse_qs(url.query)
                    filename = query["filename"][0]
                    prompt_id = filename.rsplit("_", 1)[-1].removesuffix(".png")
                    with fake.lock:
                        entry = fake.history.get(prompt_id)
                    if entry is None:
                        return self._json({"error": "no such file"}, 404)
                    seed = entry["prompt"][2][SEED_NODE]["inputs"]["noise_seed"] if "prompt" in entry else None
                    body = f"image seed={seed} server={fake.name} type={query.get('type', ['output'])[0]}".encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                return self._json({"error": "not found"}, 404)  # /ws among them: no WebSocket here

            def do_POST(self):
                url = urlsplit(self.path)
                body = self._body()
                if url.path == "/prompt":
                    prompt = body["prompt"]
                    node_errors = fake.reject(prompt) if fake.reject else None
                    if node_errors:
                        return self._json(
                            {
                                "error": {
                                    "type": "prompt_outputs_failed_validation",
                                    "message": "Prompt outputs failed validation",
                                    "details": "",
                                },
                                "node_errors": node_errors,
                            },
                            400,
                        )
                    bad = fake.bad_answer(prompt) if fake.bad_answer else None
                    prompt_id = body.get("prompt_id") or str(uuid.uuid4())
                    if bad is None or fake.queue_before_bad_answer:
                        with fake.lock:
                            fake.pending.append((prompt_id, prompt))
                            fake.accepted.append(prompt_id)
                            fake.lock.notify_all()
                    if bad is not None:
                        fake.bad_answers += 1
                        return self._raw(*bad)
                    self._json({"prompt_id": prompt_id, "number": len(fake.accepted), "node_errors": {}})
                    if fake.on_accept:
                        fake.on_accept(fake, prompt_id)
                    return
                if url.path == "/queue":
                    with fake.lock:
                        for prompt_id in body.get("delete", []):
                            before = len(fake.pending)
                            fake.pending = [item for item in fake.pending if item[0] != prompt_id]
                            if len(fake.pending) < before:
                                fake.deleted.append(prompt_id)
                    return self._json({})
                if url.path == "/interrupt":
                    with fake.lock:
                        if fake.running and body.get("prompt_id") in (None, fake.running[0]):
                            fake.interrupted.append(fake.running[0])
                    return self._json({})
                return self._json({"error": "not found"}, 404)

        return Handler
