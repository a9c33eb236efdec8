"""The examples run and do what they say (meta-training helps on held-out tasks)."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_model_example_meta_training_lowers_held_out_loss(capsys):
    result = load("custom_model").main(meta_steps=40)
    assert result["after"] < 0.5 * result["before"], result
    assert "held-out MSE" in capsys.readouterr().out
