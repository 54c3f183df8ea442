"""The job configuration: validated pydantic models, YAML loading and dotted overrides.

A config is data: importing it touches no Ray and no engine (an engine kind's
behaviour is its module's in engines/, see config/engines.py). Every field is
documented once, in its `Field(description=...)`, and `rollout-ray config-reference`
renders those descriptions, so the README and the code cannot drift apart.
"""

from rollout_ray.config.agents import AgentConfig
from rollout_ray.config.blocks import (
    JOB_SAMPLING_DEFAULTS,
    RESUME_FREE,
    CostConfig,
    SamplingConfig,
    ServeConfig,
    fingerprint_omits,
    free_on_resume,
)
from rollout_ray.config.engines import (
    ENGINE_CONFIGS,
    EngineBlock,
    EngineConfig,
    OpenAIEngineConfig,
    SimulatedEngineConfig,
    VLLMEngineConfig,
)
from rollout_ray.config.job import (
    DEFAULT_MODEL,
    SHARD_ROLLOUTS,
    DatasetConfig,
    JobConfig,
    quickstart_dict,
    sweep_label,
)
from rollout_ray.config.loading import (
    apply_override,
    format_validation_error,
    load_config,
    parse_override,
)
from rollout_ray.config.plugins import load_engine_plugins
from rollout_ray.config.verifiers import (
    ExactMatchVerifier,
    HttpVerifier,
    JsonSchemaVerifier,
    MathVerifier,
    MCQAVerifier,
    PythonVerifier,
    RegexVerifier,
    VerifierConfig,
    parse_verifier,
)

__all__ = [
    "DEFAULT_MODEL",
    "ENGINE_CONFIGS",
    "JOB_SAMPLING_DEFAULTS",
    "RESUME_FREE",
    "SHARD_ROLLOUTS",
    "AgentConfig",
    "CostConfig",
    "DatasetConfig",
    "EngineBlock",
    "EngineConfig",
    "ExactMatchVerifier",
    "HttpVerifier",
    "JobConfig",
    "JsonSchemaVerifier",
    "MCQAVerifier",
    "MathVerifier",
    "OpenAIEngineConfig",
    "PythonVerifier",
    "RegexVerifier",
    "SamplingConfig",
    "ServeConfig",
    "SimulatedEngineConfig",
    "VLLMEngineConfig",
    "VerifierConfig",
    "apply_override",
    "fingerprint_omits",
    "format_validation_error",
    "free_on_resume",
    "load_config",
    "load_engine_plugins",
    "parse_override",
    "parse_verifier",
    "quickstart_dict",
    "sweep_label",
]
