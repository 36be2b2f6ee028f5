import pytest

from edgeprune.errors import UnknownNameError
from edgeprune.registry import Registry


def test_registry_refuses_duplicates_and_lists_known_names():
    reg: Registry = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(object)
    with pytest.raises(UnknownNameError, match="known: a"):
        reg.get("b")
