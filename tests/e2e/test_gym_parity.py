"""Our verifiers against NeMo Gym's own servers: mcqa (the same rewards and extracted
letters in every grading mode Gym defines) and math (math_with_judge's library check)."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest
from math_cases import CASES, RESTATED
from mcqa_cases import EXTRA_TEXTS, MODES, OPTIONS, TEMPLATES, TEXTS

from rollout_ray.verifiers import build_verifier

pytestmark = pytest.mark.slow


def gym_response(text: str) -> dict:
    return {
        "id": "resp_1",
        "created_at": 0.0,
        "model": "m",
        "object": "response",
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


@pytest.mark.parametrize("where", ["row", "server"])
def test_mcqa_rewards_equal_gyms(gym_server, where):
    """Gym takes the grading mode from a row (three modes) or from its own config (all
    four, and it then wins over the row's): ours from the row, or from our config."""
    if where == "row":
        modes, server = MODES[:3], gym_server("mcqa")
    else:
        modes, server = MODES[3:], gym_server("mcqa", grading_mode=MODES[3])
    cases = [
        (text, mode, template, options, gold)
        for text, mode, template, (options, gold) in itertools.product(
            TEXTS + EXTRA_TEXTS, modes, TEMPLATES, [(OPTIONS, "B"), (None, "B"), (OPTIONS, "A")]
        )
    ]
    config = {"kind": "mcqa"} if where == "row" else {"kind": "mcqa", "grading_mode": MODES[3]}
    verifier = build_verifier(config)

    async def both(client: httpx.AsyncClient, case) -> tuple:
        text, mode, template, options, gold = case
        row = {
            "responses_create_params": {"input": [{"role": "user", "content": "q"}]},
            "expected_answer": gold,
        }
        if where == "row":
            row["grading_mode"] = mode
        if options is not None:
            row["options"] = options
        if template is not None:
            row["template_metadata"] = template
        reply = await client.post(
            f"{server.url}/verify", json={**row, "response": gym_response(text)}
        )
        assert reply.status_code == 200, (case, reply.text[:300])
        gym = reply.json()
        ours = await verifier.verify({**row, "response_text": text})
        return (gym["reward"], gym["extracted_answer"]), (
            ours.reward,
            ours.details["extracted_answer"],
        )

    async def run() -> list:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(both(client, c) for c in cases))

    results = asyncio.run(run())
    differ = [(c, g, o) for c, (g, o) in zip(cases, results, strict=True) if g != o]
    assert not differ, f"{len(differ)} of {len(cases)} differ, e.g. {differ[:5]}"
    # The corpus is not one-sided: both rewards occur.
    assert {g[0] for g, _ in results} == {0.0, 1.0}
    print(f"mcqa parity ({where}): {len(cases)} of {len(cases)} rewards equal")


def test_math_rewards_equal_gyms(gym_server):
    """Our math verifier against NeMo Gym's own math server (math_with_judge, its
    library verification; no judge model) on a corpus of tricky texts: with
    `reward_restated` (Gym's behaviour) every reward and extracted answer equal; by
    default the only differences are the answers that restate the question, which
    Gym scores 1 and we score 0."""
    server = gym_server("math_with_judge")
    gym_like = build_verifier({"kind": "math", "reward_restated": True})
    ours = build_verifier({"kind": "math"})

    async def judge(client: httpx.AsyncClient, case: tuple) -> tuple:
        _, question, gold, text = case
        row = {
            "responses_create_params": {"input": [{"role": "user", "content": question}]},
            "question": question,
            "expected_answer": gold,
        }
        reply = await client.post(
            f"{server.url}/verify", json={**row, "response": gym_response(text)}
        )
        assert reply.status_code == 200, (case, reply.text[:300])
        gym = reply.json()
        record = {
            **row,
            "response_text": text,
            "prompt_messages": [{"role": "user", "content": question}],
        }
        like, own = await gym_like.verify(record), await ours.verify(record)
        return (
            (gym["reward"], gym["extracted_answer"]),
            (like.reward, like.details["extracted_answer"]),
            (own.reward, own.details.get("restated_prompt", False)),
        )

    async def run() -> list:
        async with httpx.AsyncClient(timeout=60) as client:
            slots = asyncio.Semaphore(8)  # Gym forks a process per check

            async def one(case: tuple) -> tuple:
                async with slots:
                    return await judge(client, case)

            try:
                return await asyncio.gather(*(one(c) for c in CASES))
            finally:
                await gym_like.close()
                await ours.close()

    results = asyncio.run(run())
    differ = [(c, g, o) for c, (g, o, _) in zip(CASES, results, strict=True) if g != o]
    assert not differ, f"{len(differ)} of {len(CASES)} differ, e.g. {differ[:5]}"
    assert {g[0] for g, _, _ in results} == {0.0, 1.0}  # both rewards occur
    # Restating the question: Gym rewards it, ours doesn't, and says why; nothing else moves.
    moved = [c for c, (g, _, o) in zip(CASES, results, strict=True) if g[0] != o[0]]
    assert moved == RESTATED
    assert all(o == (0.0, True) for c, (_, _, o) in zip(CASES, results, strict=True) if c in moved)
    print(f"math parity: {len(CASES)} of {len(CASES)} equal; {len(moved)} restated not rewarded")
