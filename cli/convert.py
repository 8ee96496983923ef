"""`steer convert`: a pickled weight file (.pth, .pt, .bin, .ckpt) as safetensors, without running any of it.

The file is read with torch.load(weights_only=True), whose unpickler builds only tensors and plain
containers and refuses every other class, so no code in the file can run. Only a plain state dict
(names to tensors) is converted; anything else is refused with what was found. The output is written
atomically and never over an existing file unless asked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SteerError
from ..safe_files import PICKLE_SUFFIXES, is_pickle, is_safetensors, write_safetensors


def add_convert_command(subparsers) -> argparse.ArgumentParser:
    convert = subparsers.add_parser(
        "convert",
        help="turn a pickled state dict (.pth/.pt/.bin/.ckpt, e.g. an aesthetic-predictor head) into safetensors; no code in it can run",
    )
    convert.add_argument("source", type=Path, help="the pickled weight file")
    convert.add_argument("--out", type=Path, help="the .safetensors file to write (default: beside the source, same name)")
    convert.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    convert.set_defaults(run=_run)
    return convert


def plain_state_dict(path: Path) -> dict:
    """The tensors of a pickled plain state dict, loaded with torch.load(weights_only=True)."""
    import pickle

    import torch

    if not path.is_file():
        raise SteerError(f"{path} is not a file; give the path of a .pth, .pt, .bin or .ckpt weight file")
    if is_safetensors(path):
        raise SteerError(f"{path} is already safetensors; there is nothing to convert")
    if not is_pickle(path):
        raise SteerError(f"{path} is not a pickled weight file (expected one of {', '.join(PICKLE_SUFFIXES)})")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch wraps every refusal in one error whose advice (weights_only=False) must not be followed here.
        reason = _reason(str(error))
        if "GLOBAL" in reason:
            raise SteerError(
                f"{path} holds more than tensors ({reason}); only a plain state dict can be converted safely: load it in "
                "the code it came with and save model.state_dict()"
            ) from None
        raise SteerError(f"{path} could not be read as a PyTorch weight file ({reason})") from None
    except Exception as error:  # a truncated or foreign file: say which, keep the cause
        raise SteerError(f"{path} could not be read as a PyTorch weight file: {type(error).__name__}: {error}") from error
    if not isinstance(data, dict) or not data:
        raise SteerError(f"{path} holds a {type(data).__name__}, not a state dict (a mapping of names to tensors)")
    wrong = [f"{key!r} ({type(value).__name__})" for key, value in data.items() if not isinstance(key, str) or not torch.is_tensor(value)]
    if wrong:
        raise SteerError(
            f"{path} is not a plain state dict: {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''} "
            f"{'is' if len(wrong) == 1 else 'are'} not a named tensor; save the model's state_dict() alone"
        )
    # safetensors refuses tensors that share storage or are views: give each its own copy.
    return {key: value.detach().clone().contiguous() for key, value in data.items()}


def _reason(message: str) -> str:
    """The line of torch's weights-only refusal that says what it met."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    found = [line for line in lines if line.startswith(("Trying to load", "Unsupported", "Could not find", "Can only"))]
    return (found or lines or ["no reason given"])[0]


def convert(source: Path, out: Path | None = None, overwrite: bool = False) -> tuple[Path, int]:
    """Write `source`'s tensors to `out` (default: same name, .safetensors); returns the path and the tensor count."""
    out = out or source.with_suffix(".safetensors")
    if not is_safetensors(out):
        raise SteerError(f"the output {out} must end in .safetensors")
    if out.exists() and not overwrite:
        raise SteerError(f"{out} exists; choose another --out or pass --overwrite")
    tensors = plain_state_dict(source)
    write_safetensors(out, tensors, metadata={"steer_converted_from": source.name})
    return out, len(tensors)


def _run(args) -> int:
    out, count = convert(args.source, args.out, args.overwrite)
    print(f"wrote {out} ({count} tensors)")
    return 0
