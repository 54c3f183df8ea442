"""A piece's rows as generation requests: read the shard, build each row's prompt and
sampling, one request per rollout. A row that can't be used fails here, alone."""

from __future__ import annotations

import os
from typing import Any

from rollout_ray.config import JOB_SAMPLING_DEFAULTS, DatasetConfig, JobConfig
from rollout_ray.config.blocks import sampling_conflict
from rollout_ray.engines import Engine, EngineDead, GenerationRequest
from rollout_ray.errors import JobFault, RowError
from rollout_ray.inputs.prompts import build_prompt
from rollout_ray.inputs.reading import read_shard
from rollout_ray.inputs.sources import SourceRow
from rollout_ray.output.schema import sampling_record
from rollout_ray.output.work import WorkItem
from rollout_ray.run.agent_rollouts import AgentRollouts
from rollout_ray.run.outcomes import Rollout, row_failures


class PieceRequests:
    """Each dataset's settings, resolved once, and the requests of a piece."""

    def __init__(
        self, config: JobConfig, engine: Engine, episodes: AgentRollouts, secrets: tuple[str, ...]
    ):
        self.engine = engine
        self.episodes = episodes
        self.secrets = secrets
        # Per dataset: its config, its resolved sampling, and the command line's part of
        # it (which beats a row's own values); plain dicts, as this is per-row work.
        self.settings: dict[str, tuple[DatasetConfig, dict[str, Any], dict[str, Any]]] = {}
        for i, dataset in enumerate(config.datasets):
            base = JOB_SAMPLING_DEFAULTS.merged(config.sampling, dataset.sampling)
            pinned = base.model_dump(include=config.pinned_sampling(i), exclude_none=True)
            self.settings[dataset.name] = (dataset, base.model_dump(exclude_none=True), pinned)

    def dataset(self, name: str) -> DatasetConfig:
        return self.settings[name][0]

    def expand(self, item: WorkItem) -> tuple[list[Rollout], list[dict[str, Any]]]:
        """Read the piece's rows and turn them into requests; unusable rows fail here.

        Raises:
            JobFault: the input changed after the job was planned.
        """
        shard = item.shard
        dataset, base, pinned = self.settings[shard.dataset]
        wanted: dict[int, set[int]] | None = None
        if item.keys is not None:
            wanted = {}
            for row_index, rollout_index in item.keys:
                wanted.setdefault(row_index, set()).add(rollout_index)
        try:
            rows = read_shard(shard)
        except JobFault:
            raise
        except Exception as exc:
            # Storage gone after retries may pass later; a file that can't be parsed
            # at all (a corrupt Parquet footer) will not.
            transient = isinstance(exc, OSError)
            failures = []
            for i in range(shard.num_rows):
                row = SourceRow(shard.first_row + i, None)
                if wanted is None or row.row_index in wanted:
                    failures += row_failures(
                        item, row, wanted, "read", exc, not transient, self.secrets
                    )
            return [], failures
        rollouts, failures = [], []
        for row in rows:
            indices: list[int] = list(range(shard.num_repeats))
            if wanted is not None:
                if row.row_index not in wanted:
                    continue
                if -1 not in wanted[row.row_index]:
                    indices = sorted(wanted[row.row_index])
            try:
                if row.error is not None:
                    raise row.error
                assert row.value is not None
                prompt = build_prompt(row.value, dataset)
                sampling = {**base, **prompt.sampling, **pinned} if prompt.sampling else base
                conflict = prompt.sampling and sampling_conflict(sampling)
                if conflict:
                    raise RowError(f"the row's sampling gives {conflict}", "prompt")
                if dataset.agent is None:
                    self.episodes.tools_for(dataset, prompt)  # refuses rows with tools
                    token_ids = self.engine.prepare(prompt.messages, sampling)
                else:
                    token_ids = None  # an episode renders its own turns
            except (EngineDead, JobFault):
                raise
            except RowError as exc:
                failures += row_failures(item, row, wanted, exc.stage, exc, True, self.secrets)
                continue
            except Exception as exc:  # the one rule: this row's failure, not the piece's
                failures += row_failures(item, row, wanted, "prompt", exc, True, self.secrets)
                continue
            if row.warnings:
                prompt.warnings = row.warnings
            stored = sampling_record(sampling)
            seed = sampling.get("seed")
            extra = {"gym": prompt.responses_create_params is not None}
            for index in indices:
                request = GenerationRequest(
                    request_id=f"{item.piece_id}/{row.row_index}/{index}/{os.urandom(3).hex()}",
                    messages=prompt.messages,
                    # Rollout i of a row samples with seed + i: repeats differ, reruns agree.
                    sampling=sampling if seed is None else {**sampling, "seed": seed + index},
                    prompt_token_ids=token_ids,
                    extra=extra,
                )
                record_sampling = stored if seed is None else {**stored, "seed": seed + index}
                rollouts.append(Rollout(row, prompt, index, request, record_sampling))
        return rollouts, failures
