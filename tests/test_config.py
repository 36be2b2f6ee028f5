"""The small typed configs: each validates itself with a one-line ConfigError."""

import pytest

from edgeprune.deploy import DeployConfig, DeviceConfig, FineTuneConfig
from edgeprune.deploy.precision import PrecisionConfig
from edgeprune.errors import ConfigError, UnknownNameError
from edgeprune.io import fingerprint
from edgeprune.models.loading import ModelOptions, parse_shape, parse_size
from edgeprune.search.config import Budget, SearchConfig


@pytest.mark.parametrize("text,ratio,ms", [("0.5x", 0.5, None), ("3.2ms", None, 3.2), ("800us", None, 0.8)])
def test_budget_parses_relative_and_absolute(text, ratio, ms):
    b = Budget.parse(text)
    assert b.ratio == ratio
    assert b.ms == pytest.approx(ms) if ms is not None else b.ms is None


def test_relative_budget_resolves_against_the_baseline():
    assert Budget.parse("0.25x").resolve(8.0) == pytest.approx(2.0)
    assert Budget.parse("3ms").resolve(8.0) == pytest.approx(3.0)


@pytest.mark.parametrize("bad", ["fast", "0x", "2x", "-1ms", "3 seconds"])
def test_bad_budgets_are_rejected(bad):
    with pytest.raises(ConfigError):
        Budget.parse(bad)


def test_shapes_and_sizes():
    assert parse_shape("1x3x32x32") == (1, 3, 32, 32)
    assert parse_size("224") == (224, 224) and parse_size("32x48") == (32, 48)
    for bad in ("1x3x32", "ax3x3x3", "0x1x2x2"):
        with pytest.raises(ConfigError):
            parse_shape(bad)
    with pytest.raises(ConfigError):
        parse_size("big")


def test_config_validation():
    with pytest.raises(UnknownNameError, match="unknown search strategy 'annealing'; known: fixed-step, sqrt-step"):
        SearchConfig(strategy="annealing")
    with pytest.raises(ConfigError):
        SearchConfig(min_step=0.5, max_step=0.2)
    with pytest.raises(ConfigError):
        FineTuneConfig(lr=0)
    with pytest.raises(ConfigError, match="the demo brings its own"):
        ModelOptions(model="demo", weights="w.pt")


def test_fingerprint_covers_what_changes_the_result():
    """Budget, runtime, regulariser, precision change the result: a resume must refuse them."""
    base = DeployConfig()
    changed = [DeployConfig(budget=Budget(ratio=0.3)), DeployConfig(device=DeviceConfig(runtime="tvm")),
               DeployConfig(search=SearchConfig(regularizer="slimming")),
               DeployConfig(precision=PrecisionConfig("int8"))]
    prints = {fingerprint(c.fingerprint_parts()) for c in changed}
    assert fingerprint(base.fingerprint_parts()) not in prints and len(prints) == len(changed)
    from dataclasses import replace
    from pathlib import Path

    moved = replace(base, run=replace(base.run, out=Path("elsewhere"), resume=True))
    assert fingerprint(moved.fingerprint_parts()) == fingerprint(base.fingerprint_parts())
    int8 = DeployConfig(precision=PrecisionConfig("int8"))  # QAT runs after the search: resumable with more
    more_qat = DeployConfig(precision=PrecisionConfig("int8", qat_epochs=2.0))
    assert fingerprint(more_qat.fingerprint_parts()) == fingerprint(int8.fingerprint_parts())
