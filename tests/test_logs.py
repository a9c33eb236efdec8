"""Tests for :mod:`warpgrad.engine.logs`: the optional TensorBoard metrics logger."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from warpgrad.engine.logs import LOGGERS, MetricsLogger, check_logger, open_logger, row_scalars
from warpgrad.errors import UsageError

HISTORY = [
    {"step": 0, "time_s": 0.5, "val_accuracy": 0.2, "val_loss": 2.25},
    {"step": 10, "time_s": 3.125, "val_accuracy": 0.5, "val_loss": 1.5, "loss": 1.75, "method": "maml"},
    {"step": 20, "time_s": 6.0, "val_accuracy": 0.625, "val_loss": 1.0, "loss": float("nan"), "per_task": [1, 2]},
]


def _f32(value: float) -> float:
    """The value as TensorBoard stores a scalar: a 32-bit float."""
    return float(np.float32(value))


def _read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``log_dir`` as ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def _expected(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        step, scalars = row_scalars(row)
        for tag, value in scalars.items():
            out.setdefault(tag, []).append((step, _f32(value)))
    return out


def _next_second() -> None:
    """Wait for the clock's next whole second: event file names start with it and sort by it."""
    now = int(time.time())
    while int(time.time()) == now:
        time.sleep(0.02)


# ------------------------------------------------------------------------------ without tensorboard


def test_loggers_constant():
    assert LOGGERS == ("none", "tensorboard")


def test_row_scalars_keeps_finite_numbers_only():
    row = {"step": 3, "a": 1, "b": 2.5, "c": float("inf"), "d": float("nan"), "e": "x", "f": None, "g": True}
    row["h"] = np.float64(0.25)
    assert row_scalars(row) == (3, {"a": 1.0, "b": 2.5, "h": 0.25})


@pytest.mark.parametrize("step", [None, 1.5, "3", True])
def test_row_scalars_needs_int_step(step):
    row = {"val_loss": 1.0} if step is None else {"step": step, "val_loss": 1.0}
    with pytest.raises(ValueError, match="int 'step'"):
        row_scalars(row)


@pytest.mark.parametrize("kind", ["tensorbord", "", "None", "wandb"])
def test_bad_kind_is_a_usage_error_naming_it(kind, tmp_path):
    with pytest.raises(UsageError) as info:
        check_logger(kind)
    message = str(info.value)
    assert repr(kind) in message
    assert "'none'" in message and "'tensorboard'" in message
    with pytest.raises(UsageError, match="unknown logger"):
        open_logger(kind, tmp_path, "run")
    assert list(tmp_path.iterdir()) == []


def test_none_logger_writes_nothing(tmp_path):
    check_logger("none")
    with open_logger("none", tmp_path, "maml-seed0") as logger:
        assert type(logger) is MetricsLogger
        logger.log(HISTORY[0])
        assert logger.log_history(HISTORY) == 2
        assert logger.log_history(HISTORY) == 0
        assert logger.last_step == 20
    logger.close()
    assert list(tmp_path.iterdir()) == []


def test_missing_package_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # makes `import tensorboard` fail
    hint = "--log tensorboard needs the tensorboard package: pip install 'warpgrad[tensorboard]'"
    with pytest.raises(UsageError) as info:
        check_logger("tensorboard")
    assert str(info.value) == hint
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(UsageError, match=r"pip install 'warpgrad\[tensorboard\]'"):
        open_logger("tensorboard", tmp_path, "run")
    assert list(tmp_path.iterdir()) == []
    check_logger("none")  # unaffected


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_run_name_is_one_path_component(name, tmp_path):
    pytest.importorskip("tensorboard")
    with pytest.raises(UsageError, match="run name"):
        open_logger("tensorboard", tmp_path, name)


# ------------------------------------------------------------------------------ with tensorboard


def test_tensorboard_writes_every_scalar(tmp_path):
    pytest.importorskip("tensorboard")
    check_logger("tensorboard")
    with open_logger("tensorboard", tmp_path, "maml-seed0") as logger:
        for row in HISTORY:
            logger.log(row)
    log_dir = tmp_path / "tensorboard" / "maml-seed0"
    assert log_dir.is_dir()
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
    scalars = _read_scalars(log_dir)
    assert scalars == {
        "time_s": [(0, 0.5), (10, 3.125), (20, 6.0)],
        "val_accuracy": [(0, _f32(0.2)), (10, 0.5), (20, 0.625)],
        "val_loss": [(0, 2.25), (10, 1.5), (20, 1.0)],
        "loss": [(10, 1.75)],  # nan at step 20 skipped
    }
    assert scalars == _expected(HISTORY)


def test_log_history_skips_steps_already_written(tmp_path):
    pytest.importorskip("tensorboard")
    with open_logger("tensorboard", tmp_path, "run") as logger:
        assert logger.log_history(HISTORY[:1]) == 1
        assert logger.log_history(HISTORY[:2]) == 1
        assert logger.log_history(HISTORY[:2]) == 0
        assert logger.log_history(HISTORY) == 1
        assert logger.log_history(HISTORY) == 0
        assert logger.last_step == 20
    scalars = _read_scalars(tmp_path / "tensorboard" / "run")
    assert scalars == _expected(HISTORY)
    for points in scalars.values():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps))


def test_resumed_run_shows_each_step_once(tmp_path):
    """A resume rewrites the checkpoint's history into the same directory; no step shows twice."""
    pytest.importorskip("tensorboard")
    log_dir = tmp_path / "tensorboard" / "run"
    crashed = [*HISTORY, {"step": 30, "val_loss": 9.0}]  # step 30 written, then lost: not in the checkpoint
    with open_logger("tensorboard", tmp_path, "run") as logger:
        logger.log_history(crashed)
    assert _read_scalars(log_dir)["val_loss"][-1] == (30, 9.0)

    _next_second()  # a second event file, named (and so read) after the first one
    resumed = [*HISTORY, {"step": 30, "val_loss": 0.75}, {"step": 40, "val_loss": 0.5}]
    with open_logger("tensorboard", tmp_path, "run") as logger:
        assert logger.log_history(resumed[:3]) == 3  # the history rewritten from the checkpoint
        assert logger.log_history(resumed) == 2
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 2
    assert _read_scalars(log_dir) == _expected(resumed)


def test_close_twice_and_log_after_close(tmp_path):
    pytest.importorskip("tensorboard")
    logger = open_logger("tensorboard", tmp_path, "run")
    logger.log(HISTORY[0])
    logger.flush()
    logger.close()
    logger.close()
    with pytest.raises(RuntimeError, match="closed"):
        logger.log(HISTORY[1])
    assert logger.last_step == 0


def test_values_round_trip_as_float32(tmp_path):
    pytest.importorskip("tensorboard")
    values = [0.1, 1 / 3, 1e-8, 12345.678, -2.5, 0]
    with open_logger("tensorboard", tmp_path, "run") as logger:
        for step, value in enumerate(values):
            logger.log({"step": step, "metric": value})
    points = _read_scalars(tmp_path / "tensorboard" / "run")["metric"]
    assert [step for step, _ in points] == list(range(len(values)))
    for (_, got), want in zip(points, values):
        assert got == _f32(want)
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12)
