"""`--set` parsing and the sweep it spans (steer.batch.sweep): no server."""

import pytest

from steer.batch.sweep import SweepError, expand_jobs, expand_range, parse_set, parse_values, prompt_key


def workflow():
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}, "_meta": {"title": "Load Checkpoint"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}, "_meta": {"title": "Positive prompt"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}, "_meta": {"title": "Negative prompt"}},
        "7": {"class_type": "CFGGuider", "inputs": {"cfg": 7.0, "model": ["1", 0]}, "_meta": {"title": "CFGGuider"}},
        "9": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}, "_meta": {"title": "RandomNoise"}},
        "10": {"class_type": "Flags", "inputs": {"enabled": True}, "_meta": {"title": "Flags"}},
    }


# ---- values


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("7", ["7"]),
        ("a red apple", ["a red apple"]),
        ("euler,ddim", ["euler", "ddim"]),
        (r"a cat\, sitting,a dog", ["a cat, sitting", "a dog"]),
        (r"back\\slash", ["back\\slash"]),
        (r"C:\models", [r"C:\models"]),  # other backslashes are kept
        ("1..4", [1, 2, 3, 4]),
        ("4..1", [4, 3, 2, 1]),
        ("0..20..5", [0, 5, 10, 15, 20]),
        ("0.5..1.5..0.25", [0.5, 0.75, 1.0, 1.25, 1.5]),
        ("1..3,10", [1, 2, 3, "10"]),  # plain values stay text until typed by the input
        (r"1\.\.3", ["1..3"]),  # an escaped range is a plain value
        (r"\@home", ["@home"]),
        ('["a, b", 3, true]', ["a, b", 3, True]),
        ("", [""]),
    ],
)
def test_values_syntax(spec, expected):
    assert parse_values(spec) == expected


def test_values_from_a_file_one_per_non_blank_line(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat, sitting\n\n  \na dog\\, maybe\n@literal\n")
    assert parse_values(f"@{prompts}") == ["a cat, sitting", "a dog\\, maybe", "@literal"]
    assert parse_values("@prompts.txt", base_dir=tmp_path) == parse_values(f"@{prompts}")


@pytest.mark.parametrize("spec, message", [("1.5..3", "give a step"), ("1..5..-1", "never reaches"), ("1..5..0", "never reaches")])
def test_bad_ranges_say_why(spec, message):
    with pytest.raises(SweepError, match=message):
        expand_range(spec)


def test_a_missing_values_file_is_a_clear_error(tmp_path):
    with pytest.raises(SweepError, match="cannot read the values file"):
        parse_values(f"@{tmp_path / 'nope.txt'}")


# ---- targets


@pytest.mark.parametrize(
    "text, node, name",
    [
        ("9.inputs.noise_seed=1", "9", "noise_seed"),
        ("9.noise_seed=1", "9", "noise_seed"),
        ("noise_seed=1", None, "noise_seed"),
        ("Positive prompt.inputs.text=x", "Positive prompt", "text"),
        ("v1.5 loader.inputs.ckpt_name=x", "v1.5 loader", "ckpt_name"),
    ],
)
def test_targets(text, node, name):
    override = parse_set(text)
    assert (override.node, override.input) == (node, name)


def test_target_without_equals_is_rejected():
    with pytest.raises(SweepError, match="NODE.inputs.NAME=VALUES"):
        parse_set("9.inputs.noise_seed")


def test_nodes_are_found_by_id_title_class_or_unique_input():
    prompt = workflow()
    for text in ("9.inputs.noise_seed=5", "RandomNoise.noise_seed=5", "noise_seed=5"):
        (job,) = expand_jobs(prompt, [parse_set(text)])
        assert job.prompt["9"]["inputs"]["noise_seed"] == 5
        assert job.params == {"9.inputs.noise_seed": 5}
    (job,) = expand_jobs(prompt, [parse_set("Positive prompt.text=a dog")])
    assert job.prompt["2"]["inputs"]["text"] == "a dog" and job.prompt["3"]["inputs"]["text"] == ""
    assert prompt["2"]["inputs"]["text"] == "a cat"  # the workflow itself is untouched


@pytest.mark.parametrize(
    "text, message",
    [
        ("text=x", "several nodes have an input 'text'"),
        ("CLIPTextEncode.text=x", "2 nodes have the class type"),
        ("Nope.text=x", "no node with id, title or class type 'Nope'"),
        ("bogus=1", "no node in the workflow has an input 'bogus'"),
        ("2.inputs.clip=3", "connected to node 1"),
        ("9.inputs.noise_seed=abc", "is not an integer"),
        ("7.inputs.cfg=high", "is not a number"),
        ("10.inputs.enabled=maybe", "not true or false"),
    ],
)
def test_bad_overrides_say_which_and_why(text, message):
    with pytest.raises(SweepError, match=message):
        expand_jobs(workflow(), [parse_set(text)])


# ---- types and combination


def test_values_take_the_type_of_the_current_value():
    (job,) = expand_jobs(
        workflow(), [parse_set("cfg=5"), parse_set("noise_seed=3.0"), parse_set("enabled=off"), parse_set("Positive prompt.text=12")]
    )
    inputs = {node: job.prompt[node]["inputs"] for node in job.prompt}
    assert inputs["7"]["cfg"] == 5.0 and isinstance(inputs["7"]["cfg"], float)
    assert inputs["9"]["noise_seed"] == 3 and isinstance(inputs["9"]["noise_seed"], int)
    assert inputs["10"]["enabled"] is False
    assert inputs["2"]["text"] == "12"


def test_a_new_optional_input_reads_numbers_as_numbers():
    (job,) = expand_jobs(workflow(), [parse_set("7.inputs.extra=0.5")])
    assert job.prompt["7"]["inputs"]["extra"] == 0.5


def test_several_sets_make_the_product_first_varying_slowest():
    jobs = expand_jobs(workflow(), [parse_set("noise_seed=1..2"), parse_set("cfg=5,7"), parse_set("1.ckpt_name=x.safetensors")])
    assert [(j.params["9.inputs.noise_seed"], j.params["7.inputs.cfg"]) for j in jobs] == [(1, 5.0), (1, 7.0), (2, 5.0), (2, 7.0)]
    assert [j.index for j in jobs] == [0, 1, 2, 3]
    assert all(j.params["1.inputs.ckpt_name"] == "x.safetensors" for j in jobs)
    assert jobs[0].label() == "job 0 (noise_seed=1, cfg=5.0)"  # constant overrides are not repeated in messages


def test_zip_pairs_lists_and_repeats_single_values():
    jobs = expand_jobs(
        workflow(), [parse_set("noise_seed=1..3"), parse_set("Positive prompt.text=a,b,c"), parse_set("cfg=6")], zip_values=True
    )
    assert [(j.prompt["9"]["inputs"]["noise_seed"], j.prompt["2"]["inputs"]["text"], j.prompt["7"]["inputs"]["cfg"]) for j in jobs] == [
        (1, "a", 6.0),
        (2, "b", 6.0),
        (3, "c", 6.0),
    ]


def test_zip_needs_equal_lengths():
    with pytest.raises(SweepError, match="same length"):
        expand_jobs(workflow(), [parse_set("noise_seed=1..3"), parse_set("cfg=5,7")], zip_values=True)


def test_the_same_input_twice_is_rejected():
    with pytest.raises(SweepError, match="more than once"):
        expand_jobs(workflow(), [parse_set("noise_seed=1"), parse_set("9.inputs.noise_seed=2")])


def test_no_set_is_one_job_of_the_workflow_as_is():
    (job,) = expand_jobs(workflow(), [])
    assert job.prompt == workflow() and job.params == {}


def test_job_keys_follow_the_prompt():
    a = expand_jobs(workflow(), [parse_set("noise_seed=1..3")])
    b = expand_jobs(workflow(), [parse_set("RandomNoise.noise_seed=1,2,3")])
    assert [j.key for j in a] == [j.key for j in b]  # the same prompts, however they were written
    assert len({j.key for j in a}) == 3
    assert a[0].key == prompt_key(a[0].prompt)
