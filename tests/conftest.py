"""Session fixtures: one local Ray, a tiny random model, the embedded model, an S3 server.

Slow parts (Ray, the models, moto) are built once per session and shared.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("ROLLOUT_RAY_DASHBOARD", "0")  # tests don't look at it; saves start-up
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests' engines hold a few short sequences: 1 GiB of CPU KV cache instead of the 4 a
# roomy machine gets by default starts each engine about a second sooner (~100 starts).
# Tests of the default's sizing unset it.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The machine's own cloud credentials, as a cluster's nodes hold theirs (instance roles,
# a Kubernetes Secret): set before any Ray starts, so that its workers inherit them.
# Actors read credentials from their environment, never from the driver (moto accepts
# any; the s3_server fixture sets the same values).
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
# Ray's workers (and drivers the tests start) import test helpers such as the python
# verifiers in verifier_fixtures, as a user's workers import their verifier module.
_HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_HERE, os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="session")
def thinking_model(tmp_path_factory) -> str:
    """The tiny model with <think> tokens and a reasoning model's chat template."""
    from tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("thinking-model"), thinking=True))


@pytest.fixture(scope="session")
def smollm2() -> str:
    from rollout_ray.engines.embedded_model import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (run_job reuses an initialized Ray)."""
    import ray

    from rollout_ray.run.placement import init_ray

    # More logical CPUs than cores, so that tests that hold a Serve app, an engine actor
    # and a verifier actor at once can all be scheduled on a 2-core machine.
    init_ray(num_cpus=8)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto) on loopback, with a bucket named `rollouts`.

    The AWS variables are set for this process and passed on to Ray's workers."""
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from rollout_ray import storage

    storage.filesystem.cache_clear()
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="rollouts"
    )
    yield endpoint
    server.stop()
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    storage.filesystem.cache_clear()


@pytest.fixture(scope="session")
def gym_server(tmp_path_factory):
    """start(name, **settings) -> a running real NeMo Gym resources server (one per
    name and settings; settings override the server's own config, e.g. grading_mode)."""
    from gym_servers import GymServer

    servers: dict[tuple, GymServer] = {}
    workdir = tmp_path_factory.mktemp("gym")

    def start(name: str, **settings: str) -> GymServer:
        key = (name, *sorted(settings.items()))
        if key not in servers:
            servers[key] = GymServer(name, workdir, settings)
        return servers[key]

    yield start
    for server in servers.values():
        server.stop()
