"""Batch generation through ComfyUI's HTTP/WebSocket API (`steer queue`), and workflow-file checks.

    from steer.batch import run_batch
    summary = run_batch("workflows/api/color_guidance.json", ["9.inputs.noise_seed=1..8"],
                        servers=["http://127.0.0.1:8188"], out_dir="seeds")

Modules, one job each:
- api.py: the Python API (run_batch, plan_jobs, load_api_workflow);
- runner.py: BatchRunner, the scheduler over the servers; state.py: what it keeps (servers, running jobs, BatchSummary);
- outputs.py: downloading a finished job's files and its manifest record; manifest.py: manifest.jsonl;
- report.py: how the runner reports (the `steer queue` progress bar is cli/progress.py's QueueProgress);
- servers.py: one server's HTTP and WebSocket API; sweep.py: --set parsing and the job list;
- workflow.py: /object_info and the API format; ui_workflow.py: the UI format (check_ui, the hand-written ui_to_api);
  convert.py: UI to API with comfy-cli's converter when installed (the `queue` extra), ui_to_api otherwise.
The command line (`steer queue`) lives in cli/queue.py.

Needs only `requests` and `websocket-client` (and optionally comfy-cli); never imports torch or ComfyUI.
"""

from .api import load_api_workflow, plan_jobs, run_batch
from .convert import convert_to_api
from .manifest import Manifest
from .report import BatchStatus, LineReporter, Reporter
from .runner import BatchRunner
from .servers import BadAnswer, ComfyConnection, PromptRejected, ServerUnavailable, format_node_errors
from .state import BatchError, BatchSummary
from .sweep import Job, Override, SweepError, expand_jobs, parse_set, parse_values
from .ui_workflow import check_ui, ui_to_api
from .workflow import ObjectInfo, WorkflowError, check_api, diff_api

__all__ = [
    "BadAnswer",
    "BatchError",
    "BatchRunner",
    "BatchStatus",
    "BatchSummary",
    "ComfyConnection",
    "Job",
    "LineReporter",
    "Manifest",
    "ObjectInfo",
    "Override",
    "PromptRejected",
    "Reporter",
    "ServerUnavailable",
    "SweepError",
    "WorkflowError",
    "check_api",
    "check_ui",
    "convert_to_api",
    "diff_api",
    "expand_jobs",
    "format_node_errors",
    "load_api_workflow",
    "parse_set",
    "parse_values",
    "plan_jobs",
    "run_batch",
    "ui_to_api",
]
