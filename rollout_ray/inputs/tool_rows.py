"""A plan-time look at each dataset's first rows: tools need an agent to run them.

Without this a row's tools would be dropped and the model's plain answer stored and
scored as if it were an episode. Each dataset without an agent has the rows of its
first shard read (a few hundred at most) before the plan is written; rows with tools
stop the job with one message naming every such dataset and where. Rows further in are
refused one by one in the worker (failure stage `prompt`), so none runs without its
tools either way.
"""

from __future__ import annotations

from collections.abc import Iterable

from rollout_ray.config import DatasetConfig, JobConfig
from rollout_ray.errors import ConfigError
from rollout_ray.inputs.prompts import build_prompt
from rollout_ray.inputs.reading import read_shard
from rollout_ray.inputs.sources import Shard

#: What an agent block can be, for the message (docs/agents.md).
AGENT_KINDS = (
    "`{kind: gym, url: ...}` runs the tools on a NeMo Gym resources server, "
    "`{kind: python, tools: module:object}` as Python functions, `{kind: mcp, url: ...}` "
    "(or `command: [...]`) on an MCP server, `{kind: none}` records "
    "the model's calls without running them (docs/agents.md)"
)


def refuse_tools_without_agent(config: JobConfig, shards: Iterable[Shard]) -> None:
    """Raises ConfigError: datasets without `agent` have rows that offer tools. Every
    such dataset is named at once, with the config lines that fix it (a job of 114
    datasets took 21 reruns when they were refused one a run)."""
    first: dict[str, Shard] = {}
    for shard in shards:
        first.setdefault(shard.dataset, shard)
    found: dict[int, str] = {}  # config index -> where the dataset's first tools are
    for i, dataset in enumerate(config.datasets):
        index = dataset.sweep_origin if dataset.sweep_origin is not None else i
        shard = first.get(dataset.name)
        if dataset.agent is None and shard is not None and index not in found:
            where = _first_tools(dataset, shard)
            if where:
                found[index] = f"dataset {dataset.name!r}: {where}"
    if len(found) == 1:
        ((index, where),) = found.items()
        raise ConfigError(
            f"{where} and the dataset has no agent, so they would be dropped. Set "
            f"datasets.{index}.agent: {AGENT_KINDS}."
        )
    if found:
        fixes = " ".join(f"datasets.{i}.agent='{{kind: gym, url: URL}}'" for i in found)
        raise ConfigError(
            f"{len(found)} datasets offer tools and have no agent, so their tools would be "
            "dropped:\n"
            + "\n".join(f"  - (datasets.{i}) {where}" for i, where in found.items())
            + f"\nSet each one's agent, e.g. as command-line overrides (the same keys in the "
            f"config file):\n  {fixes}\nAn agent: {AGENT_KINDS}."
        )


def _first_tools(dataset: DatasetConfig, shard: Shard) -> str | None:
    """Where the first row of `shard` that offers tools is, and its tools; None if
    no row there does."""
    try:
        rows = read_shard(shard)
    except Exception:
        return None  # unreadable rows are the worker's to report, row by row
    for row in rows:
        if row.value is None:
            continue
        try:
            prompt = build_prompt(row.value, dataset)
        except Exception:
            continue
        if prompt.tools:
            names = ", ".join(t["function"]["name"] for t in prompt.tools[:5])
            where = "line" if shard.format == "jsonl" else "row"
            return f"{shard.source} {where} {row.row_index + 1} offers tools ({names})"
    return None
