"""Verifiers: every kind judged on real inputs, plus the http one against a real local server."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from typing import Any

import pytest
import verifier_fixtures
from verifier_fixtures import VerifyServer

from rollout_ray.verifiers import Verdict, Verifier, VerifierError, build_verifier, verify_all
from rollout_ray.verifiers.math import MathVerify, check


def judge(config: dict[str, Any] | Verifier, response: str, **row: Any) -> Verdict:
    verifier = config if isinstance(config, Verifier) else build_verifier(config)
    record = {"response_text": response, "prompt_messages": [], "finish_reason": "stop", **row}
    return asyncio.run(verifier.verify(record))


def reward(config: dict[str, Any] | Verifier, response: str, **row: Any) -> float:
    return judge(config, response, **row).reward


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "exact_match"},
        {"kind": "mcqa"},
        {"kind": "math"},
        {"kind": "regex", "pattern": "x"},
        {"kind": "json_schema", "schema": {"type": "object"}},
        {"kind": "python", "function": "verifier_fixtures:sync_reward"},
        {"kind": "http", "url": "http://127.0.0.1:9/verify"},
    ],
)
def test_build_verifier_maps_every_kind(config):
    from pydantic import TypeAdapter

    from rollout_ray.config import VerifierConfig

    verifier = build_verifier(config)
    assert verifier.name == config["kind"]
    # The config model from a job file builds the same implementation.
    model = TypeAdapter(VerifierConfig).validate_python(config)
    assert type(build_verifier(model)) is type(verifier)


def test_build_verifier_rejects_other_configs():
    from rollout_ray.config import SamplingConfig

    with pytest.raises(TypeError, match="SamplingConfig"):
        build_verifier(SamplingConfig())


# ----------------------------------------------------------------------------- exact_match


def test_exact_match_normalises_and_extracts():
    em = {"kind": "exact_match"}
    assert reward(em, '  "Paris."  ', expected_answer="paris") == 1.0
    assert reward(em, "London", expected_answer="Paris") == 0.0
    assert reward({**em, "case_sensitive": True}, "paris", expected_answer="Paris") == 0.0
    assert reward(em, "42", expected_answer=42) == 1.0  # non-string reference
    assert reward(em, "b", expected_answer=["a", "B"]) == 1.0  # any of several

    last = judge({**em, "extract": "last_line"}, "so...\nit is\n  42 \n\n", expected_answer="42")
    assert (last.reward, last.details) == (1.0, {"extracted_answer": "42"})

    boxed = {**em, "extract": "boxed"}
    text = "first \\boxed{7}, then \\boxed{\\frac{1}{2}} done"
    got = judge(boxed, text, expected_answer="\\frac{1}{2}")
    assert (got.reward, got.details["extracted_answer"]) == (1.0, "\\frac{1}{2}")
    none = judge(boxed, "no box here", expected_answer="7")
    assert (none.reward, none.details) == (0.0, {"extracted_answer": None})

    colon = {**em, "extract": "answer_colon"}
    got = judge(colon, "Answer: 12\nwait.\nANSWER:  13.\nbecause", expected_answer="13")
    assert (got.reward, got.details["extracted_answer"]) == (1.0, "13.")
    assert judge(colon, "12", expected_answer="12").details == {"extracted_answer": None}


def test_missing_reference_field_is_a_terminal_error():
    with pytest.raises(VerifierError, match="gold") as info:
        judge({"kind": "exact_match", "answer_field": "gold"}, "x", expected_answer="x")
    assert info.value.terminal


# ----------------------------------------------------------------------------- mcqa
# Gym's own mcqa server gives these same results (e2e/test_gym_parity.py checks ours
# against it over a larger corpus).

OPTIONS = [{"A": "London"}, {"B": "Paris"}, {"C": "Berlin"}, {"D": "Madrid"}]


@pytest.mark.parametrize(
    ("response", "extracted"),
    [
        ("The capital of France is Paris, so the answer is \\boxed{B}", "B"),
        ("\\boxed{\\text{C}}", None),  # strict: letters other than the answer's
        ("\\boxed{(D)}", "D"),
        ("\\boxed{[C]}", "C"),
        ("\\boxed{B: Paris}", None),
        ("\\boxed{A} no wait, \\boxed{B}", "A"),  # the first box counts
        ("\\boxed{E}", None),  # not an option
        ("(D)", None),  # strict needs a box
        ("\\boxed{Paris}", None),  # option text is for lenient mode
    ],
)
def test_mcqa_strict(response, extracted):
    got = judge({"kind": "mcqa"}, response, options=OPTIONS, expected_answer=" b ")
    assert got.details == {"extracted_answer": extracted, "expected_answer": "B"}
    assert got.reward == (1.0 if extracted == "B" else 0.0)


def test_mcqa_options_and_the_rows_grading_mode():
    assert reward({"kind": "mcqa"}, "\\boxed{D}", options=dict(a=1, D="x"), expected_answer="D")
    # No options: no letter is allowed (as in Gym), so nothing can be right.
    assert reward({"kind": "mcqa"}, "\\boxed{Q}", expected_answer="Q") == 0.0
    assert reward({"kind": "mcqa"}, "\\boxed{B}", options={"A": "x"}, expected_answer="B") == 0
    # The row's grading_mode applies unless the config sets one.
    row = {"options": OPTIONS, "expected_answer": "B", "grading_mode": "lenient_boxed"}
    assert reward({"kind": "mcqa"}, "\\boxed{paris}", **row) == 1.0
    strict = {"kind": "mcqa", "grading_mode": "strict_single_letter_boxed"}
    assert reward(strict, "\\boxed{paris}", **row) == 0.0
    with pytest.raises(VerifierError, match="grading_mode 'loose'"):
        judge({"kind": "mcqa"}, "x", expected_answer="B", grading_mode="loose")


def test_mcqa_lenient_modes():
    lenient = {"kind": "mcqa", "grading_mode": "lenient_boxed"}
    assert judge(lenient, "\\boxed{paris}", options=OPTIONS, expected_answer="B").reward == 1.0
    assert judge(lenient, "\\boxed{\\text{Berlin}}", options=OPTIONS, expected_answer="C").reward
    both = judge(lenient, "\\boxed{Paris or Berlin}", options=OPTIONS, expected_answer="B")
    assert both.details["extracted_answer"] is None  # ambiguous: no answer

    colon = {"kind": "mcqa", "grading_mode": "lenient_answer_colon"}
    assert judge(colon, "I think.\nAnswer: C", options=OPTIONS, expected_answer="C").reward
    by_text = judge(colon, "answer:  madrid", options=OPTIONS, expected_answer="D")
    assert by_text.details["extracted_answer"] == "D"
    assert judge(colon, "\\boxed{C}", options=OPTIONS, expected_answer="C").reward == 0.0
    md = {"kind": "mcqa", "grading_mode": "lenient_answer_colon_md"}
    assert judge(md, "**Answer: D**", options=OPTIONS, expected_answer="D").reward == 1.0


# ----------------------------------------------------------------------------- regex


def test_regex():
    found = judge({"kind": "regex", "pattern": r"\bdone\b", "ignore_case": True}, "All DONE.")
    assert (found.reward, found.details) == (1.0, {"match": "DONE"})
    assert reward({"kind": "regex", "pattern": r"\bdone\b"}, "All DONE.") == 0.0

    grouped = {"kind": "regex", "pattern": r"answer is (\w+)", "answer_field": "expected_answer"}
    assert reward(grouped, "the answer is Paris.", expected_answer="paris") == 1.0
    assert reward(grouped, "the answer is Rome", expected_answer="paris") == 0.0
    assert reward(grouped, "no idea", expected_answer="paris") == 0.0
    whole = {"kind": "regex", "pattern": r"\d+", "answer_field": "expected_answer"}
    assert judge(whole, "x 42 y", expected_answer=42).details == {"match": "42"}

    with pytest.raises(VerifierError, match="invalid regex") as info:
        build_verifier({"kind": "regex", "pattern": "(unclosed"})
    assert info.value.terminal


# ----------------------------------------------------------------------------- json_schema

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_json_schema_inline():
    js = {"kind": "json_schema", "schema": PERSON}
    assert reward(js, 'Sure:\n```json\n{"name": "Ada", "age": 36}\n```\nDone.') == 1.0
    assert reward(js, '```\n{"name": "Ada", "age": 36}\n```') == 1.0
    assert reward(js, 'Here you go: {"name": "Ada", "age": 36} -- enjoy') == 1.0

    wrong = judge(js, '{"name": "Ada", "age": "old"}')
    assert wrong.reward == 0.0 and "is not of type 'integer'" in wrong.details["error"]
    missing = judge(js, '{"name": "Ada"}')
    assert "'age' is a required property" in missing.details["error"]
    prose = judge(js, "I can't do that.")
    assert prose.reward == 0.0 and prose.details["error"].startswith("not JSON: ")


def test_json_schema_per_row():
    js = {"kind": "json_schema", "schema_field": "schema"}
    assert reward(js, "[1, 2]", schema={"type": "array", "items": {"type": "integer"}}) == 1.0
    assert reward(js, '["x"]', schema='{"type": "array", "items": {"type": "integer"}}') == 0.0
    with pytest.raises(VerifierError, match="schema"):
        judge(js, "[]")  # the row has none
    with pytest.raises(VerifierError, match="not JSON"):
        judge(js, "[]", schema="{not json")
    with pytest.raises(VerifierError, match="invalid JSON schema"):
        judge(js, "[]", schema={"type": "no-such-type"})
    with pytest.raises(VerifierError, match="invalid JSON schema"):
        build_verifier({"kind": "json_schema", "schema": {"type": 5}})


# ----------------------------------------------------------------------------- math


@pytest.fixture(scope="module")
def math_verifier():
    verifier = build_verifier({"kind": "math", "timeout_s": 20})
    yield verifier
    asyncio.run(verifier.close())


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        ("so the answer is \\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("\\boxed{0.5}", "1/2", 1.0),
        ("Thus $\\boxed{\\dfrac{1}{2}}$.", "\\frac12", 1.0),
        ("\\boxed{1+x^2}", "$x^2+1$", 1.0),
        ("first \\boxed{2}, finally \\boxed{3}", "3", 0.0),  # boxes make a set, as in Gym
        ("first \\boxed{2}, finally \\boxed{3}", "2, 3", 1.0),
        ("the answer is 42", 42, 1.0),  # no box: math-verify's own extraction
        ("\\boxed{4}", "3", 0.0),
        ("\\boxed{\\frac{1}{3}}", "0.5", 0.0),
        # GSM8K's `answer` column, a worked solution ending "#### N" (scored 0 before):
        ("\\boxed{4}", "#### 4", 1.0),
        ("The answer is 42.", "6*7=42\n#### 42", 1.0),
        ("so 72 clips", "48/2 = 24 clips.\n48+24 = 72\n#### 72", 1.0),
        ("so 6 clips", "6*7=42\n#### 42", 0.0),
    ],
)
def test_math_equivalence(math_verifier, response, gold, expected):
    assert reward(math_verifier, response, expected_answer=gold) == expected


def test_math_restating_the_question_does_not_score(math_verifier):
    """Seen in a DPO set: "The answer is 3 + 18: 3 + 18 is 19." scored 1.0 for 21."""
    question = [{"role": "user", "content": "What is 3 + 18?"}]
    for text in ("The answer is 3 + 18: 3 + 18 is 19.", "\\boxed{3+18}", "$3 + 18$"):
        got = judge(math_verifier, text, expected_answer="21", prompt_messages=question)
        assert (got.reward, got.details["restated_prompt"]) == (0.0, True), text
    # Working shown, or the value stated: those score.
    for text in ("3 + 18 = 21", "The answer is 10 + 11.", "\\boxed{21}"):
        got = judge(math_verifier, text, expected_answer="21", prompt_messages=question)
        assert (got.reward, "restated_prompt" in got.details) == (1.0, False), text
    # The reference itself may be in the question.
    which = [{"role": "user", "content": "Which is larger, $2^{10}$ or $10^3$?"}]
    assert reward(math_verifier, "\\boxed{2^{10}}", expected_answer="2^{10}", prompt_messages=which)
    # Gym's behaviour on request.
    gym_like = build_verifier({"kind": "math", "reward_restated": True})
    try:
        text = "The answer is 3 + 18."
        assert reward(gym_like, text, expected_answer="21", prompt_messages=question) == 1.0
    finally:
        asyncio.run(gym_like.close())


def test_math_no_answer_and_bad_reference(math_verifier):
    for text in ("I do not know.", "", "\\boxed{}"):
        got = judge(math_verifier, text, expected_answer="3")
        assert (got.reward, got.details) == (0.0, {"extracted_answer": None})
    assert judge(math_verifier, "\\boxed{0.5}", expected_answer="1/2").details == {
        "extracted_answer": "1/2"
    }
    with pytest.raises(VerifierError, match="reference answer"):
        judge(math_verifier, "\\boxed{1}", expected_answer="")


def test_math_works_off_the_main_thread(math_verifier):
    """The reason for the worker processes: math-verify's SIGALRM fails off the main thread."""
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(judge(math_verifier, "\\boxed{1/2}", expected_answer="0.5"))
    )
    thread.start()
    thread.join(60)
    assert [r.reward for r in results] == [1.0]


def test_math_timeout_kills_the_check_and_recovers(tmp_path):
    import psutil

    verifier = MathVerify(build_verifier({"kind": "math", "timeout_s": 3}).config, workers=1)
    try:
        judge(verifier, "\\boxed{1}", expected_answer="1")  # started: startup isn't timed
        verifier.target = verifier_fixtures.slow_check  # never returns; writes its pid
        pid_file = tmp_path / "pid"
        with pytest.raises(VerifierError, match=r"timed out after 3s") as info:
            judge(verifier, "\\boxed{1}", expected_answer=str(pid_file))
        assert info.value.terminal
        # The stuck check was abandoned by killing its process, not left running.
        assert not psutil.pid_exists(int(pid_file.read_text()))
        verifier.target = check
        verifier.config.timeout_s = 60  # recovery is the point here, not speed
        assert reward(verifier, "\\boxed{2}", expected_answer="2") == 1.0  # a fresh worker
    finally:
        asyncio.run(verifier.close())


def test_math_verify_all_keeps_order(math_verifier):
    records = [
        {"response_text": f"\\boxed{{{i}}}", "expected_answer": str(i if i % 3 else i + 1)}
        for i in range(40)
    ]
    results = asyncio.run(verify_all(math_verifier, records))
    assert [r.reward for r in results] == [0.0 if i % 3 == 0 else 1.0 for i in range(40)]
    assert [r.details["extracted_answer"] for r in results] == [str(i) for i in range(40)]


# ----------------------------------------------------------------------------- python


def test_python_sync_async_and_returns():
    sync = {"kind": "python", "function": "verifier_fixtures:sync_reward"}
    assert reward(sync, "42", expected_answer="42") == 1.0
    assert reward({**sync, "kwargs": {"bonus": 0.5}}, "41", expected_answer="42") == 0.5
    got = judge({"kind": "python", "function": "verifier_fixtures:async_reward"}, "abc")
    assert (got.reward, got.details) == (0.5, {"length": 3})


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("no_such_module.sub:fn", "cannot import 'no_such_module.sub'"),
        ("verifier_fixtures:nope", "has no attribute 'nope'"),
        ("verifier_fixtures.sync_reward", "expected 'package.module:function'"),
        ("verifier_fixtures:returns_text", "returned str"),
        ("verifier_fixtures:returns_dict_without_reward", "without 'reward'"),
        ("verifier_fixtures:raises", "raised ValueError: boom"),
    ],
)
def test_python_errors(function, message):
    with pytest.raises(VerifierError, match=message) as info:
        judge({"kind": "python", "function": function}, "x")
    assert info.value.terminal and function in str(info.value)


# ----------------------------------------------------------------------------- http

TOKEN = "s3cret-token-0123456789"


def http_verifier(url: str, **options: Any) -> Verifier:
    verifier = build_verifier(
        {"kind": "http", "url": url, "api_key_env": "VERIFY_TOKEN", **options}
    )
    verifier.backoff_base_s = 0.01  # keep the tests fast; Retry-After is still honoured
    return verifier


def mcqa_row(uuid: str, answer: str = "B", **extra: Any) -> dict[str, Any]:
    return {
        "response_text": f"Paris is the capital. \\boxed{{{answer}}}",
        "prompt_messages": [{"role": "user", "content": "Capital of France?"}],
        "finish_reason": "stop",
        "model": "tiny",
        "uuid": uuid,
        "options": OPTIONS,
        "expected_answer": "B",
        **extra,
    }


async def run_all(verifier: Verifier, records: list[dict[str, Any]]) -> list[Any]:
    try:
        return await verify_all(verifier, records)
    finally:
        await verifier.close()


def test_http_gym_shape_concurrency_and_token(monkeypatch):
    monkeypatch.setenv("VERIFY_TOKEN", TOKEN)
    gym_params = {"input": [{"role": "user", "content": "Capital?"}], "temperature": 0.5}
    records = [mcqa_row(f"ok-{i}", "B" if i % 2 else "C") for i in range(12)]
    records[0]["responses_create_params"] = gym_params
    with VerifyServer() as server:
        verifier = http_verifier(server.url, concurrency=3, headers={"X-Job": "t1"})
        results = asyncio.run(run_all(verifier, records))
    assert [r.reward for r in results] == [1.0 if i % 2 else 0.0 for i in range(12)]
    assert results[1].details == {"extracted_answer": "B"}  # echoed fields are dropped
    assert 2 <= server.max_in_flight <= 3
    assert {h["Authorization"] for h in server.headers} == {f"Bearer {TOKEN}"}
    assert {h["X-Job"] for h in server.headers} == {"t1"}
    bodies = {b["uuid"]: b for b in server.bodies}
    assert bodies["ok-0"]["responses_create_params"] == gym_params
    assert bodies["ok-1"]["responses_create_params"] == {"input": records[1]["prompt_messages"]}
    assert bodies["ok-1"]["response"]["model"] == "tiny"
    assert not {"response_text", "prompt_messages", "finish_reason", "model"} & set(bodies["ok-1"])


def test_http_retries_429_and_500(monkeypatch):
    monkeypatch.setenv("VERIFY_TOKEN", TOKEN)
    with VerifyServer() as server:
        verifier = http_verifier(server.url, max_retries=3)
        results = asyncio.run(run_all(verifier, [mcqa_row("flaky-429"), mcqa_row("flaky-500")]))
    assert [r.reward for r in results] == [1.0, 1.0]
    assert server.attempts == {"flaky-429": 2, "flaky-500": 3}
    # Three retries; the 429's waited as its Retry-After asked (not our short backoff).
    assert (verifier.retries, verifier.retry_after_waits) == (3, 1)


def test_http_gives_up_without_leaking_the_token(monkeypatch):
    monkeypatch.setenv("VERIFY_TOKEN", TOKEN)
    with VerifyServer() as server:
        verifier = http_verifier(server.url, max_retries=2, timeout_s=2)
        rows = [mcqa_row("always-500"), mcqa_row("bad-request"), mcqa_row("slow")]
        down, bad, slow = asyncio.run(run_all(verifier, rows))
    assert isinstance(down, VerifierError) and not down.terminal
    assert server.attempts["always-500"] == 3 and "HTTP 500" in str(down)
    assert TOKEN not in str(down) and "Bearer [redacted]" in str(down)  # the server echoed it
    assert isinstance(bad, VerifierError) and bad.terminal and "HTTP 400" in str(bad)
    assert server.attempts["bad-request"] == 1
    assert isinstance(slow, VerifierError) and not slow.terminal and "timed out" in str(slow)
    assert server.attempts["slow"] == 3


def test_http_connection_refused_and_missing_token(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    monkeypatch.setenv("VERIFY_TOKEN", TOKEN)
    [refused] = asyncio.run(run_all(http_verifier(f"http://127.0.0.1:{port}/v"), [mcqa_row("x")]))
    assert isinstance(refused, VerifierError) and not refused.terminal
    assert "Cannot connect to host 127.0.0.1" in str(refused) and TOKEN not in str(refused)

    monkeypatch.delenv("VERIFY_TOKEN")
    [unset] = asyncio.run(run_all(http_verifier(f"http://127.0.0.1:{port}/v"), [mcqa_row("x")]))
    assert unset.terminal and "VERIFY_TOKEN" in str(unset)


# ----------------------------------------------------------------------------- verify_all


class Flaky(Verifier):
    """Sleeps a little, fails in two ways, and records how many calls overlap."""

    name = "flaky"

    def __init__(self) -> None:
        self.in_flight = self.peak = 0

    async def verify(self, record: dict[str, Any]) -> Verdict:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(random.uniform(0, 0.01))
            i = record["i"]
            if i % 5 == 3:
                raise ValueError(f"bad {i}")
            if i % 5 == 4:
                raise VerifierError(f"later {i}", terminal=False)
            return Verdict(float(i))
        finally:
            self.in_flight -= 1


def test_verify_all_order_errors_and_concurrency():
    verifier = Flaky()
    results = asyncio.run(verify_all(verifier, [{"i": i} for i in range(30)], concurrency=4))
    assert verifier.peak == 4
    for i, result in enumerate(results):
        if i % 5 == 3:
            assert isinstance(result, VerifierError) and result.terminal
            assert str(result) == f"ValueError: bad {i}"
        elif i % 5 == 4:
            assert isinstance(result, VerifierError) and not result.terminal
        else:
            assert result == Verdict(float(i))
