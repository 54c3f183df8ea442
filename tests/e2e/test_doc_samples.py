"""The sample outputs in docs/ are what the shipped configs' commands print now: each
sample's commands run in their smallest form (scripts/doc_samples.py --check) and every
line they print has the shape of a line the doc shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_doc_samples_are_what_the_commands_print(tiny_model):
    """Seen before: sft.md showed "12 tasks x 4" and report lines the code no longer
    printed, for a config of 64 tasks x 2."""
    script = str(REPO / "scripts" / "doc_samples.py")
    done = subprocess.run(
        [sys.executable, script, "--check", "--smallest-model", tiny_model],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
