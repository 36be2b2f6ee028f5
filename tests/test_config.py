import pytest

from edgeprune.config import Budget, DeployConfig, SearchConfig, parse_shape
from edgeprune.errors import ConfigError


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


def test_shapes():
    assert parse_shape("1x3x32x32") == (1, 3, 32, 32)
    for bad in ("1x3x32", "ax3x3x3", "0x1x2x2"):
        with pytest.raises(ConfigError):
            parse_shape(bad)


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown runtime"):
        DeployConfig(runtime="tensorflow")
    with pytest.raises(ConfigError):
        SearchConfig(min_step=0.5, max_step=0.2)
