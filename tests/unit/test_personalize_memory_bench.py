"""The training-memory benchmark's table (the measurement itself needs ComfyUI: `steer bench training-memory`)."""

from steer.benchmarks.personalize_memory import markdown


def test_the_table_puts_each_measurement_beside_its_prediction():
    report = {
        "plan": "without_stage_3",
        "unet_parameters": 745_000_000,
        "cross_attention_parameters": 102_000_000,
        "copies": {"predicted_mb": 400.0, "measured_mb": 360.0},
        "stages": {
            "token": {"predicted_mb": 0.0, "measured_mb": 480.0},
            "cross_attention": {"predicted_mb": 1000.0, "measured_mb": 1100.0},
        },
    }
    table = markdown([report])
    assert "745 M parameters, 102 M in cross-attention" in table
    assert "| without_stage_3 | float32 trainable copies | 400 | 360 | 0.90 |" in table
    assert "| without_stage_3 | stage token: peak over the copies | 0 | 480 | – |" in table
    assert "| without_stage_3 | stage cross_attention: peak over the copies | 1000 | 1100 | 1.10 |" in table
