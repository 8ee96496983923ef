"""Batch generation through ComfyUI's HTTP/WebSocket API (`steer queue`), and workflow-file checks.

    from steer.batch import run_batch
    summary = run_batch("workflows/api/color_guidance.json", ["9.inputs.noise_seed=1..8"],
                        servers=["http://127.0.0.1:8188"], out_dir="seeds")

Needs only `requests` and `websocket-client`; never imports torch or ComfyUI.
"""
from .manifest import Manifest
from .queue import BatchError, BatchRunner, BatchSummary, add_queue_command, load_api_workflow, plan_jobs, run_batch
from .servers import ComfyConnection, PromptRejected, ServerUnavailable, format_node_errors
from .sweep import Job, Override, SweepError, expand_jobs, parse_set, parse_values
from .workflow import ObjectInfo, WorkflowError, check_api, check_ui, diff_api, ui_to_api

__all__ = [
    "BatchError",
    "BatchRunner",
    "BatchSummary",
    "ComfyConnection",
    "Job",
    "Manifest",
    "ObjectInfo",
    "Override",
    "PromptRejected",
    "ServerUnavailable",
    "SweepError",
    "WorkflowError",
    "add_queue_command",
    "check_api",
    "check_ui",
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
