"""The Python API of `steer queue`: plan a sweep of a workflow, and run it.

from steer.batch import run_batch
summary = run_batch("wf.json", ["noise_seed=1..4"], servers=["http://127.0.0.1:8188"], out_dir="out")
"""

from __future__ import annotations

import json
from pathlib import Path

from .convert import convert_to_api
from .report import Reporter
from .runner import BatchRunner
from .servers import ComfyConnection, ServerUnavailable
from .state import BatchError, BatchSummary
from .sweep import Job, expand_jobs, parse_set
from .workflow import WorkflowError, is_ui_format, load_workflow

DEFAULT_SERVER = "http://127.0.0.1:8188"
DEFAULT_OUT = "steer-out"


def load_api_workflow(workflow, servers=(DEFAULT_SERVER,)) -> dict:
    """An API-format prompt from a path or dict; a UI-format workflow is converted with a server's /object_info
    (convert.py says with which converter)."""
    data = load_workflow(workflow) if isinstance(workflow, (str, Path)) else json.loads(json.dumps(workflow))
    if not is_ui_format(data):
        if not isinstance(data, dict) or not all(isinstance(node, dict) and "class_type" in node for node in data.values()):
            named = workflow if isinstance(workflow, (str, Path)) else "the workflow"
            raise WorkflowError(f"{named} is not an API-format workflow (node id -> class_type, inputs)")
        return data
    errors = []
    for url in [servers] if isinstance(servers, str) else servers:
        connection = ComfyConnection(url)
        try:
            object_info = connection.object_info()
        except ServerUnavailable as error:
            errors.append(str(error))
            continue
        finally:
            connection.close()
        return convert_to_api(data, object_info)
    raise BatchError("a UI-format workflow needs a server's /object_info to convert it, and none answered: " + "; ".join(errors))


def plan_jobs(workflow, sets=(), zip_values: bool = False, servers=(DEFAULT_SERVER,), base_dir=None) -> list[Job]:
    """The jobs a `steer queue` command would run, without running them."""
    prompt = load_api_workflow(workflow, servers)
    overrides = [parse_set(text, base_dir) if isinstance(text, str) else text for text in sets]
    return expand_jobs(prompt, overrides, zip_values)


def run_batch(
    workflow,
    sets=(),
    *,
    zip_values: bool = False,
    servers=(DEFAULT_SERVER,),
    out_dir=DEFAULT_OUT,
    queue_depth: int = 2,
    outputs=("output",),
    progress: bool = True,
    stream=None,
    reporter: Reporter | None = None,
    **options,
) -> BatchSummary:
    """Plan the sweep and run it (runner.py says how); returns a BatchSummary. Messages go to `reporter`, or are
    printed to `stream` (stderr) unless `progress` is False."""
    jobs = plan_jobs(workflow, sets, zip_values, servers)
    runner = BatchRunner(
        jobs, servers, out_dir, queue_depth=queue_depth, outputs=outputs, progress=progress, stream=stream, reporter=reporter, **options
    )
    return runner.run()
