import dataclasses

import pytest

from steer.errors import SteerError
from steer.personalize.prompt import category_token_id, check_prompt_length, split_at_placeholder
from steer.personalize.stages import (
    CUSTOM,
    CUSTOM_FIELDS,
    FAST,
    OFFICIAL,
    PRESETS,
    RegularizerWeights,
    StageConfig,
    build_plan,
    custom_plan,
    plan_for_model,
    plan_from_dict,
    preset,
)


def numbers(plan):
    return [
        (s.parameter_group, s.steps, s.learning_rate, s.batch_size, s.gradient_accumulation, s.regularizer.mean, s.regularizer.variance)
        for s in plan.stages
    ]


def test_official_preset_carries_the_official_numbers():
    assert numbers(OFFICIAL) == [
        ("token", 60, 1e-3, 8, 1, 0.1, 0.0),
        ("cross_attention", 100, 2e-5, 8, 1, 2.0, 5.0),
        ("unet", 500, 2e-6, 8, 1, 2.0, 5.0),
    ]
    assert OFFICIAL.resolution == 512
    assert OFFICIAL.prompt("dog") == "a photo of a [V] dog"
    for stage in OFFICIAL.stages:
        assert (stage.weight_decay, stage.adam_betas, stage.adam_epsilon) == (1e-2, (0.9, 0.999), 1e-8)


def test_fast_preset_changes_only_stage_three():
    assert numbers(FAST)[:2] == numbers(OFFICIAL)[:2]
    assert numbers(FAST)[2] == ("unet", 200, 1e-5, 4, 1, 2.0, 5.0)
    assert set(PRESETS) == {"official", "fast"}
    assert preset("fast") is FAST
    with pytest.raises(SteerError, match="unknown preset"):
        preset("turbo")


def custom_value(name):
    if name == "resolution":
        return 128
    for suffix, value in (("batch_size", 4), ("gradient_accumulation", 2), ("learning_rate", 1e-4), ("steps", 7)):
        if name.endswith(suffix):
            return value
    return 0.5  # weight decay and the regularizer weights


def test_the_presets_train_sdxl_at_1024_and_a_custom_plan_keeps_its_size():
    for plan in (OFFICIAL, FAST):
        on_sdxl = plan_for_model(plan, sdxl=True)
        assert on_sdxl.resolution == 1024 and numbers(on_sdxl) == numbers(plan) and on_sdxl.name == plan.name
        assert plan_for_model(plan, sdxl=False) is plan
    custom = custom_plan(resolution=640)
    assert plan_for_model(custom, sdxl=True).resolution == 640


def test_custom_plan_exposes_every_number():
    changes = {name: custom_value(name) for name in CUSTOM_FIELDS}
    plan = custom_plan(**changes)
    assert plan.name == "custom" and plan.resolution == 128
    for stage in plan.stages:
        assert (stage.steps, stage.learning_rate, stage.batch_size, stage.gradient_accumulation, stage.weight_decay) == (7, 1e-4, 4, 2, 0.5)
        assert stage.regularizer == RegularizerWeights(0.5, 0.5)
        assert stage.micro_batch_size == 2
    with pytest.raises(SteerError, match="unknown custom training setting"):
        custom_plan(unet_lr=1e-5)


def test_plan_round_trips_through_a_dict():
    assert plan_from_dict(FAST.to_dict()) == FAST


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"batch_size": 8, "gradient_accumulation": 3}, "equal"),
        ({"learning_rate": 0.0}, "learning rate"),
        ({"steps": -1}, "steps"),
        ({"parameter_group": "text_encoder"}, "parameter group"),
    ],
)
def test_bad_stage_numbers_are_refused(changes, message):
    with pytest.raises(SteerError, match=message):
        dataclasses.replace(OFFICIAL.stages[1], **changes)


def test_bad_regularizer_weight_is_refused():
    with pytest.raises(SteerError, match="regularizer"):
        RegularizerWeights(-1.0, 0.0)


def test_a_plan_keeps_the_three_stages_in_order():
    with pytest.raises(SteerError, match="in this order"):
        dataclasses.replace(OFFICIAL, stages=tuple(reversed(OFFICIAL.stages)))
    with pytest.raises(SteerError, match="directly follow"):
        dataclasses.replace(OFFICIAL, prompt_template="a [V] photo of a {category}")
    assert isinstance(OFFICIAL.stages[0], StageConfig)


def test_build_plan_is_a_preset_or_the_custom_numbers_with_accumulation_on_every_stage():
    assert build_plan("fast") is FAST
    assert build_plan("official", numbers={"unet_steps": 7}) is OFFICIAL  # numbers count only for custom
    custom = build_plan(CUSTOM, 2, {"unet_steps": 7, "resolution": 256})
    assert custom == dataclasses.replace(
        custom_plan(unet_steps=7, resolution=256), stages=tuple(dataclasses.replace(s, gradient_accumulation=2) for s in custom.stages)
    )
    assert [stage.gradient_accumulation for stage in build_plan("fast", 4).stages] == [4, 4, 4]
    with pytest.raises(SteerError, match=r"unknown preset 'slow'; choose one of \('official', 'fast', 'custom'\)"):
        build_plan("slow")
    with pytest.raises(SteerError, match="unknown custom training setting"):
        build_plan(CUSTOM, numbers={"unet_stepz": 7})
    with pytest.raises(SteerError, match="does not split into 3 equal micro-batches"):
        build_plan("official", 3)


def test_the_prompt_splits_at_the_placeholder():
    words = {"a photo of a": [1, 2, 3, 1], "dog": [4], "teddy bear": [5, 6]}.__getitem__
    assert split_at_placeholder("a photo of a [V] dog", words) == ([1, 2, 3, 1], [4])
    assert split_at_placeholder("[V] teddy bear", words) == ([], [5, 6])
    assert category_token_id("teddy bear", words) == 5
    with pytest.raises(ValueError, match="exactly one"):
        split_at_placeholder("a [V] [V] dog", words)
    with pytest.raises(SteerError, match="continue after the new token"):
        split_at_placeholder("a photo of a [V]", words)
    with pytest.raises(SteerError, match="has no tokens"):
        category_token_id("", lambda text: [])
    check_prompt_length(77, 77)
    with pytest.raises(SteerError, match="78 tokens long; the text encoder takes 77"):
        check_prompt_length(78, 77)


def test_a_plan_with_nothing_to_train_is_refused():
    with pytest.raises(SteerError, match="nothing would be trained"):
        custom_plan(token_steps=0, cross_attention_steps=0, unet_steps=0)
    assert custom_plan(token_steps=1, cross_attention_steps=0, unet_steps=0).total_steps == 1
