"""Hypothesis profiles for the property-based tests of the readers.

DS2_HYPOTHESIS_PROFILE selects one:
- bounded (the default; make test, make test-fast): a few dozen examples per test, so the suite stays quick;
- fuzz (make fuzz): many examples per run, and every test searches again with fresh random inputs until
  its share of DS2_FUZZ_SECONDS (the time make fuzz was given, split evenly between the tests) is used.

Examples are not stored between runs (database=None): the image's checkout may be read-only, and a failing
example is printed with the seed that reproduces it.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

from tests.property import fuzzing

SLOW_INPUTS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("bounded", max_examples=int(os.environ.get("DS2_HYPOTHESIS_EXAMPLES", "25")),
                          deadline=None, database=None, suppress_health_check=SLOW_INPUTS)
settings.register_profile("fuzz", max_examples=500, deadline=None, database=None,
                          suppress_health_check=SLOW_INPUTS)
settings.load_profile(os.environ.get("DS2_HYPOTHESIS_PROFILE", "bounded"))


def pytest_collection_modifyitems(config, items):
    searching = [item for item in items if getattr(item.obj, "searches_for", False)]
    total = float(os.environ.get("DS2_FUZZ_SECONDS", "0"))
    fuzzing.SECONDS_PER_TEST = total / len(searching) if searching and total > 0 else 0.0


@pytest.fixture(scope="session")
def scratch(tmp_path_factory):
    """A folder the examples of a test write their inputs into (Hypothesis runs many examples per test,
    so a function-scoped tmp_path would be shared by all of them anyway)."""
    return tmp_path_factory.mktemp("fuzz")
