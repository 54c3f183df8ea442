"""Session fixtures: one local Ray, a tiny random model, the embedded model, an S3 server.

Slow parts (Ray, the models, moto) are built once per session and shared.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("ROLLOUT_RAY_DASHBOARD", "0")  # tests don't look at it; saves start-up
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="session")
def smollm2() -> str:
    from rollout_ray.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (run_job reuses an initialized Ray)."""
    import ray

    from rollout_ray.pipeline import init_ray

    init_ray()
    yield ray
    ray.shutdown()
