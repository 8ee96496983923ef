import subprocess
import sys

from steer.cli import main as cli
from steer.guidance.config import DEFAULT_PRESET, PRESETS


def test_cli_preset_names_match_the_engine():
    assert cli.PRESET_NAMES == tuple(PRESETS)
    assert cli.DEFAULT_PRESET == DEFAULT_PRESET


def test_every_command_is_listed_in_help():
    out = subprocess.run([sys.executable, "-m", "steer.cli", "--help"], capture_output=True, text=True, timeout=60).stdout
    for command in ("demo", "queue", "bench", "train"):
        assert command in out
