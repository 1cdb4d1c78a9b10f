"""The Ray session and cluster fixtures of ``tests/ray`` (one private Ray for this package)."""

from __future__ import annotations

from tests.ray.conftest import ray_session, start_cluster

__all__ = ["ray_session", "start_cluster"]
