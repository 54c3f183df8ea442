"""A plan-time look at each dataset's first rows: tools need an agent to run them.

Without this a row's tools would be dropped and the model's plain answer stored and
scored as if it were an episode. Each dataset without an agent has the rows of its
first shard read (a few hundred at most) before the plan is written; a row with tools
stops the job with a message saying where. Rows further in are refused one by one in
the worker (failure stage `prompt`), so none runs without its tools either way.
"""

from __future__ import annotations

from collections.abc import Iterable

from rollout_ray.config import JobConfig
from rollout_ray.errors import ConfigError
from rollout_ray.inputs.prompts import build_prompt
from rollout_ray.inputs.reading import read_shard
from rollout_ray.inputs.sources import Shard


def refuse_tools_without_agent(config: JobConfig, shards: Iterable[Shard]) -> None:
    """Raises ConfigError: a dataset without `agent` has rows that offer tools."""
    first: dict[str, Shard] = {}
    for shard in shards:
        first.setdefault(shard.dataset, shard)
    for dataset in config.datasets:
        shard = first.get(dataset.name)
        if dataset.agent is not None or shard is None:
            continue
        try:
            rows = read_shard(shard)
        except Exception:
            continue  # unreadable rows are the worker's to report, row by row
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
                raise ConfigError(
                    f"dataset {dataset.name!r}: {shard.source} {where} {row.row_index + 1} "
                    f"offers tools ({names}) and the dataset has no agent, so they would "
                    "be dropped. Set `agent: {kind: gym, url: ...}` or `{kind: python, "
                    "tools: module:object}` to run them, or `{kind: none}` to record the "
                    "model's calls without running them (docs/agents.md)."
                )
