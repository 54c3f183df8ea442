"""How a report reads in `inspect` (terminal and HTML alike): its headline, task ids in
natural order, long texts cut with what was left out said, an agent episode as one
line per item."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rollout_ray.views.inspect_report import InspectReport

#: Characters of a prompt or response kept in the report; views cut further.
KEEP_CHARS = 4000


def natural_key(text: str | None) -> list[Any]:
    """A task id's sort key with its numbers as numbers: `:2` before `:10`."""
    parts: list[Any] = re.split(r"(\d+)", text or "")
    parts[1::2] = [int(p) for p in parts[1::2]]
    return parts


def cut(value: Any, limit: int = KEEP_CHARS) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit:,} more chars]"


def episode_lines(episode: str | None) -> list[str] | None:
    """An agent episode's items as one short line each, in order."""
    if not episode:
        return None
    try:
        items = json.loads(episode)
    except ValueError:
        return None
    lines = []
    for item in items if isinstance(items, list) else []:
        kind = item.get("type")
        if kind == "function_call":
            lines.append(f"call {item.get('name')} {cut(item.get('arguments'), 200)}")
        elif kind == "function_call_output":
            lines.append(f"tool -> {cut(item.get('output'), 200)}")
        elif kind == "message":
            text = "".join(p.get("text", "") for p in item.get("content") or [])
            lines.append(f"answer {cut(text, 300)}")
    return lines


def headline(report: InspectReport) -> str:
    """What the report covers, in counts its tables add up to: the rollouts the dataset
    and task filters select, and (with a reward range) how many of them are in it."""
    chosen = {k: v for k, v in report.filters.items() if v is not None}
    scope = ", ".join(f"{k}={v}" for k, v in chosen.items() if not k.endswith("_reward"))
    head = f"{report.output}: {report.rollouts:,} matching rollouts" + (
        f" ({scope})" if scope else ""
    )
    if ranged(report):
        bounds = ", ".join(f"{k}={v}" for k, v in chosen.items() if k.endswith("_reward"))
        head += (
            f"; {report.matched:,} of them in the reward range ({bounds}): the examples are "
            "drawn from those, the tables and histograms describe all"
        )
    return head


def ranged(report: InspectReport) -> bool:
    """Whether the report has a reward range (it selects the examples only)."""
    return any(report.filters.get(k) is not None for k in ("min_reward", "max_reward"))
