"""`python -m steer.batch WORKFLOW --set …`: the same as `steer queue WORKFLOW --set …`.

The command line lives in the front end (cli/queue.py), which the engine never imports; so this alias replaces the
process with `python -m steer.cli queue …` (same process id, so Ctrl-C and SIGTERM reach it as before).
"""

import os
import subprocess
import sys

command = [sys.executable, "-m", "steer.cli", "queue", *sys.argv[1:]]
if os.name == "nt":  # no real exec on Windows: run it and pass its exit code on
    sys.exit(subprocess.call(command))
os.execv(sys.executable, command)
