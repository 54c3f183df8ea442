"""`rollout-ray serve`: one vLLM model on Ray Serve, shared by many jobs.

It deploys an OpenAI-compatible app on the running cluster, rollout-ray's own
(serve/app.py: the jobs' engine behind HTTP) or Ray's `ray.serve.llm`; jobs then use
the `openai` engine with the printed URL. Serving once and sharing means a sweep,
several datasets or several jobs load the model once.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from rollout_ray.config import JobConfig, ServeConfig, VLLMEngineConfig
from rollout_ray.engines.vllm_placement import cpu_environment
from rollout_ray.errors import ConfigError, RolloutRayError

log = logging.getLogger(__name__)


def serve_settings(config: JobConfig) -> ServeConfig:
    if config.serve is None:
        raise ConfigError("the config has no `serve:` block to deploy")
    return config.serve


def url_of(settings: ServeConfig) -> str:
    return f"http://{settings.host}:{settings.port}/v1"


def deploy(config: JobConfig, wait_s: float = 600, insecure: bool = False) -> str:
    """Deploy the config's model as an OpenAI-compatible Serve app; returns its URL.

    Raises:
        ConfigError: a non-loopback host without `serve.api_key_env` (and not
            `insecure`), or a key asked of Ray's app, which can't check one.
        RolloutRayError: the app did not become ready within `wait_s`.
    """
    import ray
    from ray import serve

    settings = serve_settings(config)
    key = _key(settings)
    if not insecure and key is None and not _loopback(settings.host):
        raise ConfigError(
            f"serve.host {settings.host} opens the model to the network with no key: set "
            "serve.api_key_env (clients send it as a Bearer token), or pass --insecure"
        )
    _connect()
    device = settings.device
    if device == "auto":
        device = "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    env = {"VLLM_LOGGING_LEVEL": "ERROR", "TQDM_DISABLE": "1"}
    if device == "cpu":
        cores = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
        env.update(cpu_environment(VLLMEngineConfig(), min(cores, os.cpu_count() or cores)))
    if settings.server == "rollout-ray":
        app = _own_app(config, settings, device, env, key)
    else:
        if key is not None:
            raise ConfigError(
                "serve.api_key_env is checked by rollout-ray's own app only "
                "(serve.server: rollout-ray); Ray's ray.serve.llm app has no key check"
            )
        app = _ray_serve_llm_app(config, settings, device, env)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    _check_proxy(settings)
    serve.run(app, name=settings.name, route_prefix="/", blocking=False)
    _wait_ready(settings, wait_s, key)
    return url_of(settings)


def _key(settings: ServeConfig) -> str | None:
    if not settings.api_key_env:
        return None
    key = os.environ.get(settings.api_key_env)
    if not key:
        raise ConfigError(
            f"serve.api_key_env: environment variable {settings.api_key_env} is not set"
        )
    return key


def _loopback(host: str) -> bool:
    return host in {"localhost", "::1"} or host.startswith("127.")


def _own_app(
    config: JobConfig, settings: ServeConfig, device: str, env: dict[str, str], key: str | None
):
    """rollout-ray's app (serve/app.py): each replica hosts the jobs' own engine. The
    replicas get the key's SHA-256, never the key: deployment arguments are stored by
    Serve's controller."""
    import hashlib

    from rollout_ray.serve.app import Limits, deployment

    limits = Limits(
        hashlib.sha256(key.encode()).hexdigest() if key else None,
        settings.max_request_bytes,
        settings.max_messages,
        settings.max_n,
    )

    engine = VLLMEngineConfig(
        device=device,
        tensor_parallel_size=settings.tensor_parallel_size,
        max_model_len=settings.max_model_len,
        engine_kwargs=settings.engine_kwargs,
        tool_parser=settings.tool_parser,
    )
    gpus = settings.gpus_per_replica
    if gpus is None:
        gpus = settings.tensor_parallel_size if device == "cuda" else 0
    actor: dict[str, Any] = {"num_cpus": 1, "runtime_env": {"env_vars": env}}
    options: dict[str, Any] = {}
    if settings.tensor_parallel_size > 1:
        # The engine's tensor-parallel workers are Ray actors in the replica's group.
        per_rank = gpus / settings.tensor_parallel_size
        options["placement_group_bundles"] = [{"CPU": 1, "GPU": per_rank}] * (
            settings.tensor_parallel_size
        )
        options["placement_group_strategy"] = "PACK"
    else:
        actor["num_gpus"] = gpus
    return deployment.options(
        name=settings.served_model_name or "llm",
        ray_actor_options=actor,
        # A replica batches up to its engine's max_num_seqs; keep enough queued that
        # it never waits on the proxy, and scale on a full batch's worth in flight.
        max_ongoing_requests=settings.max_ongoing_requests,
        autoscaling_config={
            "min_replicas": settings.min_replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": settings.max_ongoing_requests // 2,
        },
        **options,
    ).bind(
        config.model,
        settings.served_model_name or config.model,
        engine.model_dump_json(),
        device,
        limits,
    )


def _ray_serve_llm_app(config: JobConfig, settings: ServeConfig, device: str, env: dict[str, str]):
    """Ray's own OpenAI app (ray.serve.llm): streaming, LoRA and the rest of its
    surface; on CPU it always runs vLLM's multiprocess executor."""
    from ray.serve.llm import LLMConfig, build_openai_app

    from rollout_ray.engines.embedded_model import resolve_model
    from rollout_ray.engines.vllm_engine import CPU_ENGINE_ARGS

    engine_kwargs: dict[str, Any] = {
        "tensor_parallel_size": settings.tensor_parallel_size,
        "max_model_len": settings.max_model_len,
        **settings.engine_kwargs,
    }
    llm: dict[str, Any] = {
        "model_loading_config": {
            "model_id": settings.served_model_name or config.model,
            "model_source": resolve_model(config.model, announce=log.warning),
        },
        "deployment_config": {
            "max_ongoing_requests": settings.max_ongoing_requests,
            "autoscaling_config": {
                "min_replicas": settings.min_replicas,
                "max_replicas": settings.max_replicas,
            },
        },
    }
    if device == "cpu":
        engine_kwargs = {**CPU_ENGINE_ARGS, **engine_kwargs}  # as jobs' engines have
        # A served model here serves batch jobs: vLLM's offline batch sizes on CPU (as
        # the in-process engine gets), not its online server's half-size ones.
        for name, value in (("max_num_seqs", 256), ("max_num_batched_tokens", 4096)):
            engine_kwargs[name] = settings.engine_kwargs.get(name, value)
        llm["placement_group_config"] = {"bundles": [{"CPU": 1}]}
    else:
        gpus = settings.gpus_per_replica
        bundle = {"GPU": gpus if gpus is not None else 1, "CPU": 1}
        llm["placement_group_config"] = {"bundles": [bundle] * settings.tensor_parallel_size}
    llm["engine_kwargs"] = {k: v for k, v in engine_kwargs.items() if v is not None}
    llm["runtime_env"] = {"env_vars": env}
    return build_openai_app({"llm_configs": [LLMConfig(**llm)]})


def stop(config: JobConfig) -> None:
    """Remove the config's Serve app from the cluster, and Serve itself when no app is
    left: its controller and HTTP proxy poll all the time (measured: 6% of a core
    together, taken from the engines of every later job on the node)."""
    from ray import serve

    settings = serve_settings(config)
    _connect()
    serve.delete(settings.name)
    if not serve.status().applications:
        serve.shutdown()


def _connect() -> None:
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address="auto", namespace="rollout-ray", logging_level=logging.WARNING)
    except ConnectionError:
        raise RolloutRayError(
            "no running Ray cluster to serve on: start one with `ray start --head` "
            "(or set RAY_ADDRESS); a served model must outlive this command"
        ) from None


def _check_proxy(settings: ServeConfig) -> None:
    """Serve keeps one HTTP proxy per cluster and silently ignores a different port
    asked for later; say so instead of waiting for an app at an address nobody serves."""
    from ray.serve.context import _get_global_client

    actual = _get_global_client().http_config
    if (actual.host, actual.port) != (settings.host, settings.port):
        raise RolloutRayError(
            f"Ray Serve already runs on this cluster with its HTTP proxy on "
            f"{actual.host}:{actual.port} (one per cluster); set serve.host/serve.port to "
            f"that and engine.base_url to http://{actual.host}:{actual.port}/v1, or run "
            "`serve shutdown` first"
        )


def _wait_ready(settings: ServeConfig, wait_s: float, key: str | None) -> None:
    """Until the app lists its model (asking with the key, when it has one)."""
    import httpx

    deadline = time.monotonic() + wait_s
    url = url_of(settings) + "/models"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(url, timeout=5, headers=headers)
            if reply.status_code == 200 and reply.json().get("data"):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise RolloutRayError(f"{settings.name} was not ready at {url} after {wait_s:.0f} s")
