"""The CPU KV cache: sized from free memory unless the config sets it."""

from __future__ import annotations

import pytest

from rollout_ray.config import VLLMEngineConfig
from rollout_ray.engines import vllm_placement
from rollout_ray.engines.vllm_placement import GIB, cpu_environment, kv_cache_gib
from rollout_ray.errors import ConfigError


def test_the_default_kv_cache_fits_the_free_memory():
    """Seen before: a fixed 4 GiB, so `dpo.yaml` failed to start where less was free."""
    assert kv_cache_gib(21 * GIB, 1) == 4  # a roomy machine: the measured best, 4
    assert kv_cache_gib(8 * GIB, 1) == 3
    assert kv_cache_gib(5 * GIB, 1) == 1
    assert kv_cache_gib(2 * GIB, 1) == 1  # vLLM's smallest unit; it may still not fit
    assert kv_cache_gib(12 * GIB, 2) == 2  # two engines share the machine


def test_an_explicit_kv_cache_is_used_as_it_is(monkeypatch):
    monkeypatch.setattr(vllm_placement, "_GIVEN_KV_CACHE", None)
    monkeypatch.setattr(vllm_placement, "free_memory_bytes", lambda: 5 * GIB)
    assert cpu_environment(VLLMEngineConfig(), 2)["VLLM_CPU_KVCACHE_SPACE"] == "1"
    explicit = VLLMEngineConfig(cpu_kvcache_gib=7)
    assert cpu_environment(explicit, 2)["VLLM_CPU_KVCACHE_SPACE"] == "7"


def test_vllms_own_variable_is_honoured_after_the_config(monkeypatch):
    """A vLLM-on-CPU user's shell sets VLLM_CPU_KVCACHE_SPACE; the config still wins."""
    monkeypatch.setattr(vllm_placement, "free_memory_bytes", lambda: 21 * GIB)
    monkeypatch.setattr(vllm_placement, "_GIVEN_KV_CACHE", "2")
    assert cpu_environment(VLLMEngineConfig(), 2)["VLLM_CPU_KVCACHE_SPACE"] == "2"
    explicit = VLLMEngineConfig(cpu_kvcache_gib=3)
    assert cpu_environment(explicit, 2)["VLLM_CPU_KVCACHE_SPACE"] == "3"
    monkeypatch.setattr(vllm_placement, "_GIVEN_KV_CACHE", "")  # set but empty: as unset
    assert cpu_environment(VLLMEngineConfig(), 2)["VLLM_CPU_KVCACHE_SPACE"] == "4"
    for bad in ("0", "2.5", "lots"):
        monkeypatch.setattr(vllm_placement, "_GIVEN_KV_CACHE", bad)
        with pytest.raises(ConfigError, match="VLLM_CPU_KVCACHE_SPACE"):
            cpu_environment(VLLMEngineConfig(), 2)
