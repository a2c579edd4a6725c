"""Shared fixtures: one local Ray instance for the Ray integration tests of a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


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
