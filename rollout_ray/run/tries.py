"""How often each piece of a run was begun, and why again: the coordinator's account of
tries (errors, crashes) apart from preemptions (its node went away), and of the rows
that were on the engine when an actor died.

A piece that keeps killing its actor is given up row by row (PieceRunner._isolated)
instead of retried forever; a piece restarted because its node is gone (a preempted
spot node) is not a try: preemptions never use up the retry budget meant for errors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable


class PieceTries:
    def __init__(self, node_alive: Callable[[str], bool]):
        self.node_alive = node_alive
        self.tries: Counter[str] = Counter()
        self.preempted: Counter[str] = Counter()
        # Pieces run row by row after crashing their actors: the row running now, and
        # rows that were running when an actor died.
        self.running_rows: dict[str, int] = {}
        self.suspects: dict[str, set[int]] = {}
        self.nodes: dict[str, str] = {}

    def begin(self, piece_id: str, node: str) -> tuple[int, list[int]]:
        """Count a start of the piece on `node`: (its tries so far, its suspect rows)."""
        previous = self.nodes.get(piece_id)
        running = self.running_rows.pop(piece_id, None)
        if previous is not None and previous != node and not self.node_alive(previous):
            self.preempted[piece_id] += 1
        else:
            self.tries[piece_id] += 1
            if running is not None:
                self.suspects.setdefault(piece_id, set()).add(running)
        self.nodes[piece_id] = node
        return self.tries[piece_id], sorted(self.suspects.get(piece_id, ()))

    def running(self, piece_id: str, row_index: int | None) -> None:
        """Which row of a piece run row by row is on the engine now (None: done)."""
        if row_index is None:
            self.running_rows.pop(piece_id, None)
        else:
            self.running_rows[piece_id] = row_index

    def counts(self) -> dict[str, int]:
        """For progress: retried pieces' extra tries, and preemptions."""
        return {
            "piece": sum(n - 1 for n in self.tries.values() if n > 1),
            "preemption": sum(self.preempted.values()),
        }
