"""One ComfyUI server, as the batch queue sees it: HTTP calls plus a WebSocket reader thread.

Only `requests` and `websocket-client` are used. Prompts are posted with this client's id, so the
server sends their execution and progress events to this client's WebSocket; those events are put
on a shared queue for the scheduler. Without a WebSocket (it failed, or the server has none) the
scheduler falls back to polling /history.
"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from urllib.parse import urlsplit

import requests

try:  # websocket-client
    import websocket
except ImportError:  # pragma: no cover - a dependency; polling still works without it
    websocket = None

HTTP_TIMEOUT = 30


class ServerUnavailable(Exception):
    """The server did not answer (connection refused, reset, timed out), or answered badly (BadAnswer)."""


class BadAnswer(ServerUnavailable):
    """The server answered, but not as ComfyUI does: HTTP 5xx or an unexpected status, or a body that is not the JSON
    object expected (`prompt_id` missing from the answer to POST /prompt). `prompt_id` is the id we sent, if any: the
    server may have queued the prompt even so."""

    def __init__(self, message: str, prompt_id: str | None = None):
        super().__init__(message)
        self.prompt_id = prompt_id


class PromptRejected(Exception):
    """POST /prompt answered 400: the prompt failed the server's validation."""

    def __init__(self, error: dict, node_errors: dict):
        self.error = error or {}
        self.node_errors = node_errors or {}
        super().__init__(self.error.get("message") or "prompt rejected")


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not a server address like http://127.0.0.1:8188")
    return url


class ComfyConnection:
    """HTTP + WebSocket access to one ComfyUI server."""

    def __init__(self, url: str, client_id: str | None = None, timeout: float = HTTP_TIMEOUT):
        self.url = normalise_url(url)
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.http = requests.Session()
        self._ws_thread: threading.Thread | None = None
        self._ws = None
        self._stop = threading.Event()
        self.ws_connected = threading.Event()
        self.ws_unsupported = False

    def __repr__(self) -> str:
        return f"ComfyConnection({self.url!r})"

    # ---- HTTP

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            response = self.http.request(method, self.url + path, timeout=kwargs.pop("timeout", self.timeout), **kwargs)
        except requests.RequestException as error:
            raise ServerUnavailable(f"{self.url}: {type(error).__name__}: {error}") from error
        if response.status_code >= 500:
            raise BadAnswer(f"{self.url}{path} answered HTTP {response.status_code}{_body_excerpt(response)}")
        return response

    def get_json(self, path: str, **kwargs) -> dict:
        response = self._request("GET", path, **kwargs)
        return _json_object(response, self.url + path)

    def object_info(self) -> dict:
        return self.get_json("/object_info", timeout=max(self.timeout, 120))

    def queue_remaining(self) -> int:
        """Prompts running or waiting on the server, everyone's (GET /prompt)."""
        return int(self.get_json("/prompt").get("exec_info", {}).get("queue_remaining", 0))

    def submit(self, prompt: dict, extra_data: dict | None = None) -> str:
        """Queue a prompt; its id. Raises PromptRejected (400), BadAnswer (any other bad answer), ServerUnavailable."""
        prompt_id = str(uuid.uuid4())
        body = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            return self._post_prompt(body)
        except BadAnswer as error:
            error.prompt_id = prompt_id  # the server may have queued it even so
            raise

    def _post_prompt(self, body: dict) -> str:
        response = self._request("POST", "/prompt", json=body)
        if response.status_code == 400:
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                payload = {"error": {"message": response.text[:500]}}
            raise PromptRejected(
                payload.get("error") if isinstance(payload.get("error"), dict) else {"message": str(payload.get("error"))},
                payload.get("node_errors", {}),
            )
        answer = _json_object(response, f"{self.url}/prompt")
        if not isinstance(answer.get("prompt_id"), str) or not answer["prompt_id"]:
            raise BadAnswer(f"{self.url}/prompt answered without a prompt_id{_body_excerpt(response)}")
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict:
        """The history entry of a prompt, or {} while it has none."""
        return self.get_json(f"/history/{prompt_id}").get(prompt_id, {})

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        response = self._request(
            "GET", "/view", params={"filename": filename, "subfolder": subfolder, "type": folder_type}, timeout=max(self.timeout, 120)
        )
        response.raise_for_status()
        return response.content

    def cancel(self, queued: list[str] = (), running: list[str] = ()) -> None:
        """Take our prompts off the queue and stop the ones running (best effort)."""
        if queued:
            self._request("POST", "/queue", json={"delete": list(queued)}, timeout=10)
        for prompt_id in running:
            self._request("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=10)

    def queue_ids(self) -> tuple[set[str], set[str]]:
        """(running, pending) prompt ids on the server."""
        data = self.get_json("/queue")
        return ({item[1] for item in data.get("queue_running", [])}, {item[1] for item in data.get("queue_pending", [])})

    # ---- WebSocket

    def start_events(self, events: queue.Queue, key) -> None:
        """Read WebSocket events in a daemon thread and put (key, message) on `events`; reconnects."""
        if websocket is None:
            self.ws_unsupported = True
            return
        self._stop.clear()
        self._ws_thread = threading.Thread(target=self._read_events, args=(events, key), name=f"ws {self.url}", daemon=True)
        self._ws_thread.start()

    def _read_events(self, events: queue.Queue, key) -> None:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        ws_url = f"{scheme}://{parts.netloc}{parts.path}/ws?clientId={self.client_id}"
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._ws = websocket.create_connection(ws_url, timeout=10)
            except websocket.WebSocketBadStatusException:
                self.ws_unsupported = True  # no /ws here: the scheduler polls instead
                return
            except Exception:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            self.ws_connected.set()
            events.put((key, {"type": "_ws_connected"}))
            try:
                self._ws.settimeout(1.0)
                while not self._stop.is_set():
                    try:
                        frame = self._ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    if isinstance(frame, str) and frame:
                        try:
                            events.put((key, json.loads(frame)))
                        except json.JSONDecodeError:
                            pass
            except Exception:
                pass
            finally:
                self.ws_connected.clear()
                try:
                    self._ws.close()
                except Exception:
                    pass
                if not self._stop.is_set():
                    events.put((key, {"type": "_ws_closed"}))

    def close(self) -> None:
        self._stop.set()
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass
        if self._ws_thread is not None:
            self._ws_thread.join(timeout=3)
        self.http.close()


def _json_object(response: requests.Response, where: str) -> dict:
    """The JSON object a 2xx answer carries, or BadAnswer saying what came instead."""
    if not 200 <= response.status_code < 300:
        raise BadAnswer(f"{where} answered HTTP {response.status_code}{_body_excerpt(response)}")
    try:
        payload = response.json()
    except ValueError:
        raise BadAnswer(f"{where} answered something that is not JSON{_body_excerpt(response)}") from None
    if not isinstance(payload, dict):
        raise BadAnswer(f"{where} answered JSON that is not an object{_body_excerpt(response)}")
    return payload


def _body_excerpt(response: requests.Response, limit: int = 120) -> str:
    text = " ".join(response.text.split())
    if not text:
        return ""
    return f": {text[:limit]!r}" + ("…" if len(text) > limit else "")


def format_node_errors(error: dict, node_errors: dict, prompt: dict | None = None) -> str:
    """The server's validation errors, one line per node and input."""
    lines = []
    message = (error or {}).get("message") or "the prompt failed validation"
    details = (error or {}).get("details")
    lines.append(message + (f": {details}" if details and details not in message else ""))
    for node_id, entry in sorted((node_errors or {}).items(), key=lambda item: str(item[0])):
        class_type = entry.get("class_type") or ((prompt or {}).get(node_id) or {}).get("class_type", "?")
        title = (((prompt or {}).get(node_id) or {}).get("_meta") or {}).get("title")
        node_text = f"node {node_id} ({class_type}" + (f' "{title}"' if title and title != class_type else "") + ")"
        for item in entry.get("errors", []) or [{}]:
            extra = item.get("extra_info") or {}
            input_name = extra.get("input_name")
            text = item.get("message") or item.get("type") or "invalid"
            detail = item.get("details")
            if detail and detail not in text and detail != input_name:
                text += f": {detail}"
            if "received_value" in extra and str(extra["received_value"]) not in text:
                text += f" (got {extra['received_value']!r})"
            lines.append(f"  {node_text}" + (f", input {input_name!r}" if input_name else "") + f": {text}")
    return "\n".join(lines)


def compact_node_errors(node_errors: dict) -> dict:
    """node_errors without the bulky input_config, for the manifest: {node_id: [{input, type, message, details}]}."""
    compact = {}
    for node_id, entry in (node_errors or {}).items():
        compact[node_id] = [
            {
                "input": (item.get("extra_info") or {}).get("input_name"),
                "type": item.get("type"),
                "message": item.get("message"),
                "details": item.get("details"),
            }
            for item in (entry or {}).get("errors", [])
        ]
    return compact
