"""Ray's own errors that are not the job's stay off the console."""

from __future__ import annotations

import gc
import logging

import pytest
from helpers import wait_until

pytestmark = pytest.mark.slow


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_ray_datas_stats_actor_errors_are_not_printed(ray_session):
    """Seen at the end of a resumed run: Ray Data's stats actor (its dashboard
    bookkeeping) refused a late update with KeyError: 'dataset_...', and Ray printed it
    as an unhandled error with a traceback. A user task's unhandled error still shows."""
    import ray
    from ray.data._internal.stats import get_or_create_stats_actor

    kept = _Kept()
    logger = logging.getLogger("ray._private.worker")  # where Ray reports them
    logger.addHandler(kept)
    try:
        stats = get_or_create_stats_actor()
        late = stats.update_dataset.remote("dataset_finished_long_ago_0", {"state": "RUNNING"})
        ray.get(stats.get_datasets.remote())  # the late update has run (and failed)
        del late
        gc.collect()

        @ray.remote
        def a_user_task():
            raise ValueError("a user task failed")

        failed = a_user_task.remote()
        del failed
        gc.collect()
        wait_until(lambda: any("a user task failed" in m for m in kept.messages), 120, "its error")
    finally:
        logger.removeHandler(kept)
    assert not any("_StatsActor" in m or "dataset_finished_long_ago_0" in m for m in kept.messages)
