"""The front end: the `steer` command and its sub-commands (demo, bench, train, queue).

It owns what only a terminal run needs: argument parsing (main.py), progress on a terminal
(progress.py) and the ComfyUI bootstrap for headless runs (comfy_bootstrap.py). The layers below
(guidance/, personalize/, batch/, the nodes) never import it.
"""
