"""A finished job's outputs, downloaded through /view into the out folder, and its manifest record.

Each file is written as `.NAME.part` and renamed into place, so the folder never holds half a file under its real
name; the runner removes leftover `.part` files when a run ends.
"""

from __future__ import annotations

import os
from pathlib import Path

from .servers import ComfyConnection
from .sweep import Job


def output_files(outputs: dict, folder_types: set | None) -> list[tuple[str, tuple[str, str, str]]]:
    """(node id, (filename, subfolder, folder type)) of each file a history entry lists, once each, node ids in order;
    only the given folder types ("output", "temp"...), or all when None."""
    files, seen = [], set()
    for node_id in sorted(outputs, key=lambda k: (len(str(k)), str(k))):
        for entries in (outputs[node_id] or {}).values():
            if not isinstance(entries, list):
                continue
            for entry in entries:
                if not isinstance(entry, dict) or "filename" not in entry:
                    continue
                ident = (entry["filename"], entry.get("subfolder", ""), entry.get("type", "output"))
                if ident in seen or (folder_types is not None and ident[2] not in folder_types):
                    continue
                seen.add(ident)
                files.append((str(node_id), ident))
    return files


def download_outputs(conn: ComfyConnection, job: Job, outputs: dict, out_dir: Path, folder_types: set | None) -> list[str]:
    """Download the job's files as OUT/<job>_<node>_<n><suffix>; returns their names."""
    names, counts = [], {}
    for node_id, ident in output_files(outputs, folder_types):
        data = conn.view(*ident)
        count = counts[node_id] = counts.get(node_id, -1) + 1
        name = f"{job.index:05d}_{node_id}_{count}{Path(ident[0]).suffix or '.bin'}"
        temporary = out_dir / f".{name}.part"
        temporary.write_bytes(data)
        os.replace(temporary, out_dir / name)
        names.append(name)
    return names


def remove_partial_downloads(out_dir: Path) -> None:
    for partial in out_dir.glob(".*.part"):  # a download cut short
        partial.unlink(missing_ok=True)


def job_record(job: Job, status: str, server: str, *, prompt_id=None, seconds=None, files=(), error=None) -> dict:
    """The manifest line of a job that reached an end."""
    record = {
        "job": job.index,
        "key": job.key,
        "status": status,
        "params": job.params,
        "prompt_id": prompt_id,
        "server": server,
        "files": list(files),
        "seconds": round(seconds, 2) if seconds is not None else None,
    }
    if error:
        record["error"] = error
    return record
