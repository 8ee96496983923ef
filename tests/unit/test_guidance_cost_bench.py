"""benchmarks/guidance_cost.py's table: ratios against the same run's baseline, targets and verdicts, JSON shape.
(The measurement itself needs ComfyUI and minutes of CPU; it is run by `steer bench`, not by the tests.)"""

import json
import subprocess
import sys

from steer.benchmarks import guidance_cost as bench
from steer.guidance.config import DEFAULT_PRESET


def _times(**seconds):
    base = {name: [1.0, 1.0, 1.0] for name in bench.MODES}
    base.update({name: [value] * 3 for name, value in seconds.items()})
    return base


def _row(rows, mode, measure=None):
    return next(r for r in rows if r["mode"] == mode and (measure is None or r["measure"] == measure))


def test_ratios_are_medians_against_the_unguided_step_and_verdicts_follow_the_targets():
    times = _times(
        unguided=2.0,
        through_positive=5.0,
        through_combined=8.0,
        x0_vae=3.0,
        x0_taesd=2.2,
        through_positive_aug=5.25,
        x0_taesd_aug=3.3,
        naive=20.0,
        default=3.0,
    )
    times["unguided"] = [2.0, 100.0, 1.0]  # an outlier repeat does not move the median
    rows = bench.build_rows(times, None, None)
    assert _row(rows, bench.MODES["through_positive"].name)["ratio"] == 2.5
    assert _row(rows, bench.MODES["through_positive"].name)["met"] is True  # ≤ 3.0
    assert _row(rows, bench.MODES["through_combined"].name)["met"] is False  # 4.0 > 3.5
    assert _row(rows, bench.MODES["x0_taesd"].name)["ratio"] == 1.1
    augmentation = _row(rows, f"random augmentation |T| = {bench.AUGMENT_COPIES}, through the model")
    assert abs(augmentation["ratio"] - 0.05) < 1e-9 and augmentation["met"] is True
    assert _row(rows, f"random augmentation |T| = {bench.AUGMENT_COPIES}, x0 shortcut + TAESD")["met"] is False  # +50 %
    speedup = _row(rows, f"Steer's default ({DEFAULT_PRESET}) over the naive reference")
    assert speedup["ratio"] == 20.0 / 3.0 or abs(speedup["ratio"] - 6.667) < 1e-3
    assert speedup["met"] is None  # reported, no target


def test_memory_rows_target_only_the_checkpointed_modes():
    memory = {name: 1000.0 for name in bench.MEMORY_MODES}
    memory.update(through_positive=1500.0, through_positive_nockpt=2500.0)
    rows = [r for r in bench.build_rows(_times(), memory, None) if r["measure"] == "peak memory over unguided"]
    by_mode = {r["mode"]: r for r in rows}
    assert by_mode[bench.MODES["through_positive"].name]["met"] is True
    assert by_mode[bench.MODES["through_positive_nockpt"].name]["target"] is None


def test_markdown_marks_missed_targets_and_the_cli_exposes_the_json_option():
    rows = bench.build_rows(_times(through_positive=10.0), None, {"time": 1.3, "memory": None})
    table = bench.markdown(rows)
    assert "| 10.00 | — | ≤ 3.0 | **no** |" in table
    assert "AttnDreamBooth" in table and "1.30" in table
    json.dumps(rows)  # serialisable as written by --json
    out = subprocess.run([sys.executable, "-m", "steer.cli", "bench", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--json" in out and "digits" in out


def test_floors_are_the_sum_of_the_parts():
    parts = {
        "vae_decoder_and_loss_fwd_bwd": 4.0,
        "taesd_decoder_and_loss_fwd_bwd": 0.5,
        "loss_fwd_bwd": 0.3,
        f"loss_fwd_bwd_{bench.AUGMENT_COPIES}_views": 2.3,
        "unet_forward_one_branch": 1.0,
    }
    floor = bench.floors(parts, unguided_step=2.0)
    assert floor["through_positive"] == (1.0 + 3.0 + 4.0) / 2.0  # negative branch + positive fwd/bwd (U = 1) + decoder/loss
    assert floor["through_combined"] == (6.0 + 4.0) / 2.0
    assert floor["x0_vae"] == 3.0 and floor["x0_taesd"] == 1.25
    assert abs(floor["augmentation_through_model"] - 2.0 / 8.0) < 1e-12
    rows = bench.build_rows(_times(through_positive=9.0, unguided=2.0), None, None, floor)
    assert _row(rows, bench.MODES["through_positive"].name)["floor"] == 4.0


def test_without_comfyui_the_bench_says_what_to_set():
    env = {k: v for k, v in __import__("os").environ.items() if k != "COMFYUI_PATH"}
    run = subprocess.run([sys.executable, "-m", "steer.cli", "bench", "--no-memory"], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 2
    assert "COMFYUI_PATH" in run.stderr and "steer bench" in run.stderr
