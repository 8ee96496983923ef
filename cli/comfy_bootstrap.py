"""ComfyUI for headless runs (`steer train` on a checkpoint file, `steer bench`): import it from
COMFYUI_PATH into this process, on the CPU when there is no GPU, and refuse a different `comfy`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import SteerError

NEEDS_COMFYUI = "this needs ComfyUI: set COMFYUI_PATH to a ComfyUI checkout (git clone https://github.com/comfyanonymous/ComfyUI)"


def import_comfyui(force_cpu: bool = False, missing: str = NEEDS_COMFYUI, root: str | Path | None = None):
    """Put `root` (default: COMFYUI_PATH) at the end of sys.path (this process only) and import comfy.sd
    from it. `missing` is the error when neither is given."""
    root = root or os.environ.get("COMFYUI_PATH")
    if not root:
        raise SteerError(missing)
    root = str(Path(root).resolve())
    if not (Path(root) / "comfy" / "sd.py").is_file():
        raise SteerError(f"COMFYUI_PATH={root} is not a ComfyUI checkout (no comfy/sd.py)")
    loaded = sys.modules.get("comfy")
    # comfy has no __init__.py: a namespace package, whose location is __path__, not __file__.
    loaded_from = [str(Path(p).resolve()) for p in getattr(loaded, "__path__", [])] if loaded is not None else []
    if loaded is not None and not any(p.startswith(root) for p in loaded_from):
        raise SteerError(
            f"another 'comfy' package ({', '.join(loaded_from) or loaded}) is already imported; run steer train in a fresh process"
        )
    if root not in sys.path:
        # Last, not first: ComfyUI's top-level modules must not shadow installed packages. The checks
        # below make sure `comfy` itself still comes from this checkout.
        sys.path.append(root)
    import comfy.cli_args
    import torch

    if force_cpu or not (torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())):
        comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: it picks the device then
    import comfy.sd

    if not str(comfy.sd.__file__).startswith(root):
        raise SteerError(f"imported comfy from {comfy.sd.__file__}, not from COMFYUI_PATH={root}")
    return comfy.sd
