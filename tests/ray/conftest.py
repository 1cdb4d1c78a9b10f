"""Fixtures of the Ray suite: one real Ray session for all of it, and durable clusters on it.

Ray costs ~8 s to start on this 2-core machine, so every test here shares one Ray
(``ray.init(address="local")``, namespace ``durable``) and the tests are few. Ray workers import
``tests.ray.apps`` and the conformance classes it reuses through ``PYTHONPATH`` (the repo root).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durable.cluster import RAY_NAMESPACE
from tests.ray.harness import PYTHONPATH, RunningCluster, launch, make_config, shutdown


@pytest.fixture(scope="package")  # Ray stops once tests/ray is done, not at session end
def ray_session() -> Iterator[Any]:
    import ray

    ray.init(
        address="local",  # a private Ray, never an existing cluster by accident
        namespace=RAY_NAMESPACE,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": PYTHONPATH, "RAY_worker_niceness": "0"}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def start_cluster(ray_session: Any, tmp_path: Path) -> Iterator[Callable[..., RunningCluster]]:
    """``start_cluster(slots=2, ...)``: a durable cluster on ``tmp_path``, stopped after the test."""
    started: list[RunningCluster] = []

    def start(**overrides: Any) -> RunningCluster:
        running = launch(make_config(tmp_path / "data", **overrides))
        started.append(running)
        return running

    yield start
    for running in started:
        shutdown(running.cluster)
