"""`steer bench personalize`: its pieces on tiny models and synthetic records, and one quick run end to end."""

import json

import pytest
import torch
from unit.tiny_sd import RESOLUTION, single_thread, tiny_backbone, tokenizer_folder  # noqa: F401

from steer.benchmarks import personalize_world_report as report
from steer.benchmarks.personalize_world import BenchBackbone, as_lora
from steer.benchmarks.personalize_world_methods import KINDS, METHODS, SINGLE_SUBJECT_KINDS, without_subject_token
from steer.cli.main import main
from steer.errors import SteerError
from steer.personalize.backbone import TextConditioning
from steer.personalize.preview import preview_image, sample_images


@pytest.fixture(scope="module")
def backbone(tokenizer_folder):  # noqa: F811
    model = tiny_backbone(tokenizer_folder)
    model.reset_token("dog")
    with torch.no_grad():
        model.token.add_(torch.randn(model.token.shape, generator=torch.Generator().manual_seed(0)))
    return model


def test_a_sampling_prompt_takes_the_token_at_every_placeholder(backbone):
    one = backbone.encode_concept_text("a [V] dog").embeddings
    assert torch.allclose(one, backbone.encode_prompt("a [V] dog").embeddings.float())
    two = backbone.encode_concept_text("a [V] dog and a [V] dog").embeddings
    plain = backbone.encode_text("a dog dog and a dog dog").embeddings
    assert not torch.allclose(two, plain)
    assert torch.allclose(backbone.encode_concept_text("a dog").embeddings, backbone.encode_text("a dog").embeddings)
    with pytest.raises(SteerError, match="followed by the category word"):
        backbone.encode_concept_text("a dog [V]")


def test_a_batch_of_samples_is_the_images_one_by_one_calls_give(backbone):
    conditions = TextConditioning.cat([backbone.encode_concept_text("a [V] dog"), backbone.encode_concept_text("a [V] dog and a [V] dog")])
    batch = sample_images(backbone, conditions, [3, 4], size=RESOLUTION, steps=4, cfg=5.0)
    alone = preview_image(backbone, "a [V] dog", seed=3, size=RESOLUTION, steps=4)
    assert batch.shape == (2, 3, RESOLUTION, RESOLUTION)
    assert torch.allclose(batch[0], alone, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])


def test_a_lora_of_the_delta_keeps_low_rank_changes_and_cuts_the_rest(tokenizer_folder):  # noqa: F811
    from steer.benchmarks.random_diffusers import random_sd_components

    model = BenchBackbone(*random_sd_components(tokenizer_folder, unet_size="tiny", sample_size=RESOLUTION // 2))
    weights = dict(model.unet.named_parameters())
    name = next(n for n, p in weights.items() if p.dim() == 2 and min(p.shape) >= 8)
    low_rank = torch.randn(weights[name].shape[0], 2) @ torch.randn(2, weights[name].shape[1])
    with torch.no_grad():
        weights[name].add_(low_rank)
    as_lora(model, rank=2)
    assert torch.allclose(weights[name] - model.base_unet[name], low_rank, atol=1e-4)
    with torch.no_grad():
        weights[name].add_(torch.randn(weights[name].shape))
    as_lora(model, rank=2)
    residual = weights[name] - model.base_unet[name]
    assert torch.linalg.matrix_rank(residual.double(), atol=1e-4) <= 2
    model.restore_base_unet()
    assert torch.equal(weights[name], model.base_unet[name])


def test_methods_are_plans_of_the_one_trainer_and_the_base_prompt_drops_only_the_token():
    assert METHODS["attndreambooth"].plan.stage("unet").learning_rate == pytest.approx(2e-6 * 10)
    assert METHODS["adb_no_stage2"].plan.stage("cross_attention").steps == 0
    assert not any(s.regularizer.enabled for s in METHODS["adb_no_regularizer"].plan.stages)
    assert METHODS["dreambooth"].token == "rare" and METHODS["textual_inversion"].plan.stage("unet").steps == 0
    assert without_subject_token("a small [V] circle and a small [V] circle") == "a small circle and a small circle"


def _record(method, concept, seed, identity, obeyed):
    kinds = {kind: {"obeyed": [obeyed] * 4, "identity": [], "outline": [], "colour": [], "judge_cosine": []} for kind in KINDS}
    for kind in SINGLE_SUBJECT_KINDS:
        for key in ("identity", "outline", "colour", "judge_cosine"):
            kinds[kind][key] = [identity] * 4
    kinds["background"]["background_leak"] = [0.0] * 4
    return {"method": method, "concept": concept, "seed": seed, "train_seconds": 1.0, "peak_mib": None, "kinds": kinds}


def _records(scores: dict, jitter: float = 0.01) -> list[dict]:
    out = []
    for method, (identity, fidelity) in scores.items():
        for k, (concept, seed) in enumerate([(c, s) for c in ("a", "b", "c") for s in (0, 1)]):
            out.append(_record(method, concept, seed, identity + jitter * (k % 3), fidelity))
    return out


def test_the_verdicts_follow_their_fixed_rules():
    balanced = {"base": (0.3, 0.5), "textual_inversion": (0.3, 0.6), "dreambooth": (0.7, 0.3), "attndreambooth": (0.68, 0.58)}
    balanced.update({"adb_no_regularizer": (0.5, 0.5), "adb_no_stage2": (0.68, 0.58)})
    rows = {row["claim"]: row for row in report.verdicts(report.summarize(_records(balanced)))}
    assert rows["AttnDreamBooth balances identity and prompt fidelity where TI loses identity and DreamBooth the prompt"]["reproduced"]
    assert "HELPS" in rows["the cross-attention regularizer helps"]["line"]
    assert "no measurable effect" in rows["stage 2 helps"]["line"]
    unbalanced = dict(balanced, attndreambooth=(0.6, 0.4))
    rows = report.verdicts(report.summarize(_records(unbalanced)))
    assert "NOT reproduced" in rows[0]["line"] and "not within 0.05 of the best fidelity" in rows[0]["line"]
    assert rows[-1]["line"].startswith("best balance: adb_no_stage2")
    no_trade_off = dict(balanced, textual_inversion=(0.8, 0.6))
    assert "trade-off is not there" in report.verdicts(report.summarize(_records(no_trade_off)))[0]["line"]


def test_the_table_names_every_method_and_the_plot_is_an_image():
    summaries = report.summarize(_records({"base": (0.3, 0.5), "dreambooth": (0.7, 0.3)}))
    table = report.markdown(summaries, report.verdicts(summaries), "# t")
    assert "| base |" in table and "| dreambooth |" in table and "fidelity (background, place, size, two, second)" in table
    image = report.plot(summaries)
    assert image.ndim == 3 and image.shape[2] == 3 and image.min() < 0.5


def test_bad_bench_options_are_refused_with_the_choices(capsys):
    assert main(["bench", "personalize", "--concepts", "dog"]) == 2
    assert "unknown concept(s) dog; choose from arrow" in capsys.readouterr().err
    assert main(["bench", "personalize", "--seeds", "0,x"]) == 2
    assert "--seeds takes whole numbers" in capsys.readouterr().err


def test_a_quick_run_writes_the_table_plot_grid_and_records_and_resumes_from_them(tmp_path, capsys):
    arguments = ["bench", "personalize", "--quick", "--concepts", "arrow", "--seeds", "0"]
    arguments += ["--methods", "base,custom_diffusion,adb_lora_r4", "--out", str(tmp_path)]
    assert main(arguments) == 0
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert names == [f"personalize_world{suffix}" for suffix in (".json", ".md", ".png", ".records.jsonl", "_samples.png")]
    records = [json.loads(line) for line in (tmp_path / "personalize_world.records.jsonl").read_text().splitlines()]
    # The LoRA variant needs the official plan's training, which runs (and is recorded) for it.
    assert [r["method"] for r in records] == ["base", "custom_diffusion", "attndreambooth", "adb_lora_r4"]
    table = (tmp_path / "personalize_world.md").read_text()
    assert "QUICK" in table and "| adb_lora_r4 |" in table and "| attndreambooth |" not in table
    trained_line = "arrow     seed 0 custom_diffusion"
    assert trained_line in capsys.readouterr().out
    assert main(arguments) == 0  # everything is in the records: nothing trains again
    assert trained_line not in capsys.readouterr().out
    stale = [dict(r, fingerprint="made-another-way") if r["method"] == "custom_diffusion" else r for r in records]
    (tmp_path / "personalize_world.records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    assert main(arguments) == 0
    assert trained_line in capsys.readouterr().out
