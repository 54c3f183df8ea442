"""Side-by-side runs on a noisy machine: alternated order, every run shown, an honest verdict.

A benchmark here compares two (or more) sides of one run. Sides are run in an
alternated order (A B B A A B ...), so a machine that warms up or slows down over the
run shifts every side alike; every run's figure is printed, then each side's median,
the ratio of medians, each side's run-to-run spread ((max - min) / median), and a
verdict against the target: "met", "not met", or "unresolved" when the spread is wider
than the margin the target leaves (noise that big can't tell met from not met).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


def schedule(sides: list[str], rounds: int) -> Iterator[str]:
    """Each side `rounds` times, alternating direction: A B, B A, A B, ..."""
    for i in range(rounds):
        yield from sides if i % 2 == 0 else reversed(sides)


@dataclass
class Comparison:
    """Figures of each side, in the order they were measured."""

    what: str
    unit: str
    runs: dict[str, list[float]] = field(default_factory=dict)

    def run_all(self, sides: dict[str, Callable[[], float]], rounds: int) -> Comparison:
        for side in schedule(list(sides), rounds):
            value = sides[side]()
            self.runs.setdefault(side, []).append(value)
            print(f"  {self.what}: {side} {value:,.2f} {self.unit}", flush=True)
        return self

    def median(self, side: str) -> float:
        return statistics.median(self.runs[side])

    def spread(self, side: str) -> float:
        values = self.runs[side]
        return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0

    def ratio(self, a: str, b: str) -> float:
        return self.median(a) / self.median(b)

    def report(self, a: str, b: str, at_least: float | None = None, at_most: float | None = None):
        """Print a/b with every run, and the verdict against `at_least` or `at_most`."""
        ratio = self.ratio(a, b)
        noise = max(self.spread(a), self.spread(b))
        verdict = "no target"
        if at_least is not None or at_most is not None:
            bound = at_least if at_least is not None else at_most
            met = ratio >= bound if at_least is not None else ratio <= bound
            margin = abs(1.0 - bound) if bound != 1.0 else 0.0
            if noise > max(margin, abs(ratio - bound)):
                verdict = "unresolved (run-to-run spread wider than the margin)"
            else:
                verdict = "met" if met else "not met"
        runs = "; ".join(
            f"{side}: " + ", ".join(f"{v:,.1f}" for v in self.runs[side]) for side in (a, b)
        )
        target = (
            f" target >= {at_least:g}"
            if at_least is not None
            else (f" target <= {at_most:g}" if at_most is not None else "")
        )
        print(
            f"{self.what}: {a}/{b} = {ratio:.3f} (medians {self.median(a):,.1f} vs "
            f"{self.median(b):,.1f} {self.unit}; spread {self.spread(a):.1%} / "
            f"{self.spread(b):.1%}; runs {runs}){target}: {verdict}",
            flush=True,
        )
        return ratio, verdict
