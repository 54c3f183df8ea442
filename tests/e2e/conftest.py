"""After every end-to-end test, every job output it left under its tmp_path is checked
against its commit records (rollout_ray.output.integrity): each file a commit names
exists and holds what the commit counts, no rollout is committed twice, and reading
the output back gives exactly the committed count. A test that damages an output on
purpose says so with @pytest.mark.damages_output. Every agent episode in those outputs
is checked too (tests/episode_check.py): its tokens, items and counts agree, call for
call; the session's tally is printed at the end."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def outputs_keep_their_promises(request, tmp_path: Path):
    yield
    if request.node.get_closest_marker("damages_output"):
        return
    from episode_check import check_output as check_episodes

    from rollout_ray.output.integrity import check_output

    for job in sorted(tmp_path.rglob("_manifest/job.json")):
        output = job.parent.parent
        found = check_output(str(output))
        assert found.ok, f"{output}: " + "; ".join(found.problems)
        checked, problems = check_episodes(output)
        EPISODES["checked"] += checked
        EPISODES["problems"] += len(problems)
        assert problems == [], f"{output}: " + "; ".join(problems[:10])


#: Agent episodes checked by the fixture above in this session, and their problems.
EPISODES = {"checked": 0, "problems": 0}


def pytest_terminal_summary(terminalreporter):
    if EPISODES["checked"]:
        terminalreporter.write_line(
            f"agent episodes checked (tokens, items, counts): {EPISODES['checked']}, "
            f"problems: {EPISODES['problems']}"
        )
