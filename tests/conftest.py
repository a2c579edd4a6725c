"""Shared fixtures: one local Ray instance for the Ray integration tests of a module.

Every test that starts Ray carries the `ray` marker (registered in pyproject.toml), so
`python -m pytest tests -q -m "not ray"` is the fast loop: the tests that use `ray_local` get it
here, the modules that start Ray otherwise mark themselves (`pytestmark = pytest.mark.ray`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

#: Fixtures that start Ray: a test that uses one (directly or through another fixture) is `ray`.
RAY_FIXTURES = frozenset({"ray_local"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use a Ray-starting fixture, before `-m` selects."""
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A small local Ray (2 CPUs, no dashboard), shared by all Ray tests and shut down after."""
    import logging

    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
    )
    yield
    ray.shutdown()
