"""`steer bench regions`: its rules on synthetic rows, its img2img schedule and sources, and one quick run end to end."""

import json

import pytest
import torch
from PIL import Image

from steer.benchmarks import regions_world as bench
from steer.benchmarks import regions_world_report as report
from steer.cli.main import main
from steer.world import model as wm


def _mask_rows(inside: float, outside: float) -> list[dict]:
    rows = [{"label": "unguided", "preset": "", "configuration": "unguided", "inside_hit": 0.0, "outside_distance": 0.0}]
    for configuration in bench.MASK_CONFIGURATIONS:
        masked = configuration != "unmasked"
        rows.append(
            {
                "label": f"mpgd, {configuration}",
                "preset": "mpgd",
                "configuration": configuration,
                "inside_hit": 0.9 * (inside if masked else 1.0),
                "outside_distance": 0.2 * (outside if masked else 1.0),
            }
        )
    return rows


@pytest.mark.parametrize("inside, outside, holds", [(0.85, 0.2, True), (0.75, 0.2, False), (0.85, 0.3, False)])
def test_the_mask_rule_needs_the_inside_kept_and_the_outside_left_alone(inside, outside, holds):
    verdicts = report.mask_verdicts(_mask_rows(inside, outside))
    assert [v["holds"] for v in verdicts] == [holds] * 5 and [v["headline"] for v in verdicts] == [True, False, False, False, False]


def _reward_row(label, preset, strength, stripes, keeping_change, frechet_ratio):
    return {
        "label": label,
        "preset": preset,
        "strength": strength,
        "stripe_rate": stripes,
        "head_stripe_rate": stripes,
        "keeping": 0.8 + keeping_change,
        "keeping_change": keeping_change,
        "frechet_ratio": frechet_ratio,
    }


def test_the_reward_rules_need_a_rise_of_a_quarter_and_a_small_cost():
    rows = [
        _reward_row("unguided", "", 0.0, 0.1, 0.0, 1.0),
        _reward_row("mpgd, strength 1", "mpgd", 1.0, 0.35, -0.02, 1.2),
        _reward_row("paper, strength 1", "paper", 1.0, 0.3, -0.1, 1.2),
        _reward_row("mpgd, strength 2", "mpgd", 2.0, 0.35, -0.02, 1.6),
    ]
    assert [(v["claim"].split(":")[0], v["holds"]) for v in report.reward_verdicts(rows)] == [
        ("mpgd, strength 1", True),
        ("mpgd, strength 1", True),
        ("paper, strength 1", False),
        ("paper, strength 1", False),
        ("mpgd, strength 2", True),
        ("mpgd, strength 2", False),
    ]


def test_the_img2img_rules_need_the_background_halved_and_the_layout_kept():
    def row(label, preset, distance, layout, iou):
        return {"label": label, "preset": preset, "background_distance": distance, "layout_same": layout, "foreground_iou": iou}

    rows = [
        row("unguided img2img", "", 0.6, 0.7, 0.6),
        row("mpgd img2img", "mpgd", 0.3, 0.66, 0.56),
        row("paper img2img", "paper", 0.31, 0.64, 0.6),
    ]
    assert [v["holds"] for v in report.img2img_verdicts(rows)] == [True, True, False, False]


def test_img2img_starts_at_comfyuis_denoise_point_and_takes_the_sources_away_from_the_reference_colours():
    sigmas = bench.img2img_sigmas(50, wm.alphas_cumprod())
    full = wm.sigmas_for_steps(83)
    assert len(sigmas) == 51 and float(sigmas[-1]) == 0.0 and torch.equal(sigmas, full[-51:])
    assert float(full[-1 - 50]) == float(sigmas[0]) and float(sigmas[0]) < float(wm.sigmas_for_steps(50)[0]) / 2
    sources = bench.img2img_sources(40)
    assert len(sources) == 40 and not any({s.main.color, s.background} & set(bench.REFERENCE_COLORS) for s in sources)


def test_a_quick_run_writes_the_tables_the_verdicts_and_the_grid(tmp_path, capsys):
    assert main(["bench", "regions", "--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "regions_world.md").read_text()
    assert "QUICK" in text and "![samples](regions_world_samples.png)" in text
    for header in ("| sampling | inside: yellow share | inside x unmasked |", "| sampling | judged striped | head says striped |"):
        assert header in text
    assert "| sampling | background: RGB distance to orange |" in text
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line and "sampling" not in line]
    assert len(table_rows) == 13 + 4 + 4  # mask: unguided + 2 presets x 6; reward: 2 unguided + 2 presets; img2img: source + 3
    assert all(line.count("|") == 9 for line in table_rows[:13]) and all(line.count("|") == 8 for line in table_rows[13:])
    record = json.loads((tmp_path / "regions_world.json").read_text())
    assert record["settings"]["quick"] and record["settings"]["count"] == 2
    assert {v["measurement"] for v in record["verdicts"]} == {"mask", "reward", "img2img"}
    assert len(record["verdicts"]) == 10 + 4 + 4 and all(isinstance(v["holds"], bool) for v in record["verdicts"])
    assert "_images" not in record["mask"][0] and 0.0 <= record["mask"][1]["inside_hit"] <= 1.0
    grid = Image.open(tmp_path / "regions_world_samples.png")
    assert grid.size == (230 + 2 * report.CELL, 13 * report.CELL)


def test_a_quick_run_without_an_output_folder_is_refused(capsys):
    assert main(["bench", "regions", "--quick"]) == 2
    assert "--quick needs --out" in capsys.readouterr().err
