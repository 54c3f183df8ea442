"""The output's lease: exactly one job writes an output at a time, fenced by storage.

The lease is a sequence of generations, `_manifest/lease/GGGGGGGGGGGG.json`, each
created with the storage's own exclusive create (a local hard link that fails if the
name exists; on S3 a PUT with If-None-Match: *). Whoever creates generation G+1 holds
the lease; a holder renews by creating the next one, so a renewal that races a
takeover loses or wins as a whole, never both. A holder that can't create its next
generation has lost the lease and stops.

Expiry never compares two hosts' clocks: a job that finds the lease held watches the
latest generation on its own monotonic clock, and takes over only after a full TTL in
which no renewal appeared (at once when the holder's process is gone on the same host,
or it released the lease). A holder commits only while its last renewal is younger
than half the TTL, by its own clock, so a stalled holder can't write after a takeover.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from rollout_ray import storage
from rollout_ray.errors import JobFault, ResumeRefused

log = logging.getLogger(__name__)

TTL_S = 60.0
RENEW_EVERY_S = TTL_S / 4
#: Generations kept behind the latest (older ones are removed on renewal).
KEEP = 3


class LeaseLost(JobFault):
    """Another job took the output; this one stops (its commits are kept)."""


def owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}


class Lease:
    """One job's hold on an output (the driver acquires, the coordinator renews)."""

    def __init__(self, folder: str, holder: dict[str, Any], ttl_s: float = TTL_S):
        self.folder = folder
        self.holder = holder
        self.ttl_s = ttl_s
        self.generation = 0
        self.renewed_at = 0.0  # time.monotonic() of the last successful create
        #: Set once this process learns, however, that another job took the output:
        #: from then on it writes nothing there (see `guard`).
        self.lost: LeaseLost | None = None
        # One renewal at a time in this process (the upkeep ticker and a commit's guard
        # may both find the lease due): two would race for one generation, and the
        # loser would take itself for a holder that lost the lease.
        self._renewing = threading.Lock()

    # ------------------------------------------------------------------ reading

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        """The newest generation and its content, or None when there is none."""
        names = storage.list_files(self.folder, ".json")
        generations = sorted(int(os.path.basename(n)[:-5]) for n in names if _is_gen(n))
        for generation in reversed(generations):
            try:
                return generation, storage.read_json(self._uri(generation))
            except (FileNotFoundError, ValueError):
                continue  # removed by a renewal between listing and reading
        return None

    # ------------------------------------------------------------------ holding

    def acquire(
        self, wait_s: float | None = None, notice: Callable[[str], None] | None = None
    ) -> None:
        """Take the lease, or raise ResumeRefused if another job holds it.

        A holder that is alive on this host, or that renews while we watch, refuses us.
        One we can't see is watched for a TTL (or `wait_s`): no renewal in that time
        means it is gone, and the lease is taken over.
        """
        wait_s = self.ttl_s if wait_s is None else wait_s
        while True:
            found = self.latest()
            if found is None:
                if self._create(1):
                    return
                continue  # another job created the first generation: look again
            generation, held = found
            if held.get("token") == self.holder["token"]:
                self.generation = generation
                self.renewed_at = time.monotonic()
                return
            alive = alive_here(held)
            if held.get("released") or alive is False:
                if self._create(generation + 1):
                    return
                raise self._refused(self.latest() or found)
            if alive is True:
                raise self._refused(found)
            if notice:
                notice(
                    f"{self.folder}: a job on {held.get('host')} (pid {held.get('pid')}) held "
                    f"this output; waiting up to {wait_s:.0f} s to see whether it is alive"
                )
            newer = self._newer_within(generation, wait_s)
            if newer is not None:
                if newer[1].get("released"):
                    continue  # it finished while we watched: take the lease now
                raise self._refused(newer)
            if self._create(generation + 1):
                return
            raise self._refused(self.latest() or found)

    def adopt(self) -> None:
        """Go on holding a lease this job's driver took (a coordinator, maybe restarted):
        the latest generation must be ours.

        Raises:
            LeaseLost: another job holds the output now.
        """
        found = self.latest()
        if (
            found is None
            or found[1].get("token") != self.holder["token"]
            or found[1].get("released")
        ):
            raise self._lose(
                f"this job no longer holds the output's lease ({self.folder}); another job "
                "took it: this run stops here, everything it committed is kept"
            )
        self.generation = found[0]

    def renew(self) -> None:
        """Create the next generation; raise LeaseLost if another job took the lease."""
        with self._renewing:
            self._renew()

    def _renew(self) -> None:
        if self.lost is not None:
            raise self.lost
        if not self._create(self.generation + 1):
            raise self._lose(
                f"another job took the output's lease ({self.folder}); this run stops here, "
                "everything it committed is kept"
            )
        for old in range(max(1, self.generation - KEEP - 4), self.generation - KEEP):
            storage.remove(self._uri(old))

    def fresh(self) -> bool:
        """Whether commits may be written now: renewed within half the TTL."""
        return time.monotonic() - self.renewed_at < self.ttl_s / 2

    def guard(self) -> None:
        """Call before every write to the output: raises LeaseLost once the lease is
        lost, and renews first if the last renewal is getting old (a stalled process).

        A write that follows within half the TTL can't meet a takeover: another job
        takes over only after watching a full TTL with no renewal.
        """
        if self.lost is not None:
            raise self.lost
        if not self.fresh():
            with self._renewing:
                if not self.fresh():  # not renewed by another thread meanwhile
                    self._renew()

    def release(self, forget: bool = False) -> None:
        """Hand the output back at once, if we still hold it: the next job needn't wait
        out the TTL. (The coordinator may have renewed since the driver acquired.)

        Older generations are removed, so runs that come and go (refused ones too)
        leave one lease file. `forget`: the job wrote nothing else under the output (it
        was refused before planning): remove the lease files too, leaving nothing.
        """
        found = self.latest()
        if found and found[1].get("token") == self.holder["token"] and not found[1].get("released"):
            if not self._create(found[0] + 1, released=True):
                return
            for name in storage.list_files(self.folder, ".json"):
                if _is_gen(name) and int(os.path.basename(name)[:-5]) < self.generation:
                    storage.remove(name)
            if forget:
                # Another job that read our released generation and creates the next
                # one holds the lease whether or not this file is still there.
                storage.remove(self._uri(self.generation))
                storage.remove_empty_dirs(os.path.dirname(os.path.dirname(self.folder)))

    # ------------------------------------------------------------------ internals

    def _create(self, generation: int, released: bool = False) -> bool:
        """Create `generation` as ours; False if it exists or a newer one does.

        The second check matters: holders remove generations far behind the latest, so
        a holder that stalled long enough could create an old, removed number again.
        Newer generations exist whenever an old one was removed (the latest never is),
        so a create followed by a look at the latest tells a real renewal from that.
        """
        content = {**self.holder, "generation": generation, "written_at": time.time()}
        if released:
            content["released"] = True
        started = time.monotonic()
        if not storage.create_exclusive(self._uri(generation), json.dumps(content).encode()):
            return False
        latest = self.latest()
        if latest is None or latest[0] != generation:
            return False
        self.generation, self.renewed_at = generation, started
        return True

    def _lose(self, message: str) -> LeaseLost:
        self.lost = LeaseLost(message)
        return self.lost

    def _newer_within(self, generation: int, seconds: float) -> tuple[int, dict[str, Any]] | None:
        """The first generation after `generation` to appear within `seconds`, if any."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(1.0, self.ttl_s / 20))
            found = self.latest()
            if found is not None and found[0] != generation:
                return found
        return None

    def _refused(self, found: tuple[int, dict[str, Any]]) -> ResumeRefused:
        held = found[1]
        return ResumeRefused(
            f"another job is writing {os.path.dirname(os.path.dirname(self.folder))} now "
            f"(host {held.get('host')}, pid {held.get('pid')}). Wait for it to finish, stop "
            "it, or use another output."
        )

    def _uri(self, generation: int) -> str:
        return storage.join(self.folder, f"{generation:012d}.json")


def _is_gen(uri: str) -> bool:
    name = os.path.basename(uri)
    return name.endswith(".json") and name[:-5].isdigit()


def alive_here(held: dict[str, Any]) -> bool | None:
    """Whether the holder's process is alive, if it ran on this host; None if unknown."""
    if held.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(held["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, KeyError):
        return True
    return True
