"""The engine arguments every rollout-ray vLLM engine gets (and benchmarks give raw
vLLM): what a job's own `engine.engine_kwargs` changes, and what it can't lose."""

from __future__ import annotations

from rollout_ray.config import VLLMEngineConfig
from rollout_ray.engines.vllm_engine import CPU_BLOCK_SIZE, engine_kwargs


def test_cpu_engines_get_32_token_kv_blocks_unless_the_job_says():
    # Prefix caching reuses whole blocks: vLLM-CPU's 128 made each agent turn recompute
    # up to 127 tokens it had seen (docs/platform.md).
    default = engine_kwargs(VLLMEngineConfig(), "cpu", "/models/m", metrics=False)
    assert default["block_size"] == CPU_BLOCK_SIZE == 32
    assert default["enable_prefix_caching"] is True
    own = VLLMEngineConfig(engine_kwargs={"block_size": 128})
    assert engine_kwargs(own, "cpu", "/models/m", metrics=False)["block_size"] == 128


def test_gpu_engines_keep_vllms_own_block_size():
    kwargs = engine_kwargs(VLLMEngineConfig(), "cuda", "/models/m", metrics=False)
    assert "block_size" not in kwargs and "enforce_eager" not in kwargs
