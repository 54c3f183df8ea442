"""Does an episode's record agree with itself, token for token? A checker any test (or a
person) can run on any job output.

What an RL trainer trusts of an episode: the tokens with mask 1 are the model's turns,
each turn's calls are exactly the `function_call` items of that turn (arguments as the
model wrote them, not re-serialised), every call in the tokens ran and its output sits in
the masked-out tokens after it, the counts (`steps`, `tool_calls`, `output_tokens`) are
those of the tokens and items, a turn cut by a length limit shows as an incomplete
episode, and the `/verify` body held the same items and response.

Written apart from the package's own parsing (forced call arrays read with the json
module, hermes calls with a regex) so that it can disagree with it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_DECODER = json.JSONDecoder(strict=False)  # what a grammar lets through: raw control chars
#: A hermes call block; the last may lack its closing tag (vLLM's parser reads it too).
_HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


def episode_problems(
    record: dict[str, Any], tokenizer: Any = None, verify_body: dict[str, Any] | None = None
) -> list[str]:
    """What is wrong with one episode record (an empty list: nothing).

    Args:
        record: a committed rollout record with an `episode`.
        tokenizer: the model's tokenizer; None skips the token checks (engines without
            real token ids).
        verify_body: what the environment's /verify received for this episode, if known.
    """
    items = json.loads(record["episode"])
    turns = split_turns(items)
    problems: list[str] = []
    say = problems.append
    incomplete = record["finish_reason"] == "length"
    calls = [i for i in items if i["type"] == "function_call"]
    outputs = {i["call_id"]: i for i in items if i["type"] == "function_call_output"}
    executed = [c for c in calls if c["call_id"] in outputs]
    if len(outputs) != len(executed):
        say(f"{len(outputs)} outputs for {len(executed)} executed calls")
    if record["tool_calls"] != len(executed):
        say(f"tool_calls is {record['tool_calls']}, {len(executed)} calls ran")
    if executed and len(executed) != len(calls):
        say(f"{len(calls) - len(executed)} of {len(calls)} calls never ran")
    if record["steps"] != len(turns):
        say(f"steps is {record['steps']}, the items hold {len(turns)} turns")
    for turn in turns:
        if turn["message"] is not None and turn["calls"] and not _text(turn["message"]):
            say("a turn with calls also holds an empty message")
        if turn["message"] is not None and not turn["calls"] and turn is not turns[-1]:
            say("a turn that answered without calls is not the last")
    last = turns[-1] if turns else None
    answer = _text(last["message"]) if last and last["message"] is not None else ""
    if (record["response_text"] or "") != answer:
        say(f"response_text {record['response_text']!r} is not the last answer {answer!r}")
    response = json.loads(record["episode_response"]) if record.get("episode_response") else None
    if response is not None and (response["status"] == "incomplete") != incomplete:
        say(f"response {response['status']} with finish_reason {record['finish_reason']}")
    if verify_body is not None:
        sent = verify_body["response"]
        if sent["output"] != items:
            say("/verify got other items than the record holds")
        if response is not None and {k: v for k, v in sent.items() if k != "output"} != response:
            say("/verify got another response than the record holds")
    if tokenizer is not None and record.get("output_token_ids") is not None:
        # Once the calls are spent the last turn samples with tool_choice "none" (the
        # response says so), as Gym's model server would: a call-shaped text it writes
        # is its answer, a message (checked against the tokens), not a call.
        answered = response is not None and response.get("tool_choice") == "none"
        problems += _token_problems(record, turns, outputs, tokenizer, incomplete, answered)
    return problems


def split_turns(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items grouped by model turn: [reasoning] [message] [calls...] then outputs."""
    turns: list[dict[str, Any]] = []
    previous = None
    for item in items:
        kind = item["type"]
        current = turns[-1] if turns else None
        new = current is None or previous == "function_call_output"
        if kind == "reasoning" and current and (current["message"] or current["calls"]):
            new = True
        if kind == "message" and current and (current["message"] is not None or current["calls"]):
            new = True
        if kind != "function_call_output" and new:
            turns.append({"reasoning": None, "message": None, "calls": [], "outputs": []})
            current = turns[-1]
        assert current is not None, f"the episode starts with a {kind}"
        if kind == "reasoning":
            current["reasoning"] = item
        elif kind == "message":
            current["message"] = item
        elif kind == "function_call":
            current["calls"].append(item)
        else:
            current["outputs"].append(item)
        previous = kind
    return turns


def _text(message: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in message["content"])


def _runs(mask: list[int]) -> list[tuple[int, int, int]]:
    """(value, start, end) of each run of equal mask values."""
    runs: list[tuple[int, int, int]] = []
    for i, m in enumerate(mask):
        if runs and runs[-1][0] == m:
            runs[-1] = (m, runs[-1][1], i + 1)
        else:
            runs.append((m, i, i + 1))
    return runs


def _token_problems(record, turns, outputs, tokenizer, incomplete, answered) -> list[str]:
    problems: list[str] = []
    say = problems.append
    ids, mask = record["output_token_ids"], record["output_mask"]
    logprobs = record["output_logprobs"]
    if not (len(ids) == len(mask) == len(logprobs or ids)):
        return [f"{len(ids)} ids, {len(mask)} mask values, {len(logprobs or [])} logprobs"]
    if sum(mask) != record["output_tokens"]:
        say(f"output_tokens is {record['output_tokens']}, the mask marks {sum(mask)}")
    if logprobs and any(lp != 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 0):
        say("a token the model did not write has a logprob")
    runs = _runs(mask)
    model_runs = [r for r in runs if r[0] == 1]
    if not runs or runs[0][0] != 1:
        say("the output does not start with the model's first turn")
        return problems
    if len(model_runs) != len(turns):
        say(f"the tokens hold {len(model_runs)} model turns, the items {len(turns)}")
        return problems
    for n, (turn, (_, start, end)) in enumerate(zip(turns, model_runs, strict=True)):
        text = tokenizer.decode(ids[start:end], skip_special_tokens=True)
        last = n == len(turns) - 1
        if turn["message"] is not None and _text(turn["message"]) not in text:
            say(f"turn {n + 1}: the message is not what the tokens say")
        # An empty answer is the model's only when it wrote nothing (an end of turn at
        # once); one standing for written text (once: a cut call array) is not.
        silent = turn["message"] is not None and not _text(turn["message"]).strip()
        if silent and not turn["calls"] and not turn["reasoning"] and text.strip():
            say(f"turn {n + 1}: an empty answer, and the tokens say {text[:80]!r}")
        no_tools = last and answered and not turn["calls"]
        if turn["calls"] or (text.lstrip().startswith(("[{", "<tool_call>")) and not no_tools):
            found, partial = _calls_in(text, turn["calls"])
            written = [(c["name"], c["arguments"]) for c in turn["calls"]]
            if found != written:
                say(f"turn {n + 1}: the tokens hold calls {found}, the items {written}")
            if partial and not (last and incomplete):
                say(f"turn {n + 1}: an unfinished call in the tokens, and the turn was not cut")
        after = ids[end : model_runs[n + 1][1]] if not last else ids[end:]
        observed = tokenizer.decode(after, skip_special_tokens=False)
        for out in turn["outputs"]:
            if out["output"] not in observed:
                say(f"turn {n + 1}: the output of {out['call_id']} is not in the tokens after it")
    return problems


def _calls_in(text: str, items: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], bool]:
    """The complete calls written in a turn's text as (name, arguments as written), and
    whether an unfinished one follows them."""
    stripped = text.strip()
    if stripped.startswith("["):
        return _array_calls(stripped)
    if len(items) == 1 and stripped.startswith("{") and items[0]["arguments"] == stripped:
        return [(items[0]["name"], stripped)], False  # a named tool choice: the arguments
    found = []
    for block in _HERMES.findall(text):
        try:
            call = json.loads(block, strict=False)
            arguments = call.get("arguments", {})
        except (ValueError, AttributeError):
            return found, True
        exact = [i["arguments"] for i in items if i["arguments"] in block]
        if exact and json.loads(exact[0]) == arguments:
            found.append((call.get("name"), exact[0]))
        else:
            found.append((call.get("name"), json.dumps(arguments)))
    return found, False


def _array_calls(text: str) -> tuple[list[tuple[str, str]], bool]:
    """A forced-call array's complete elements, each {"name", "parameters"}, with the
    parameters' own text."""
    calls, at = [], 1
    while at < len(text):
        while at < len(text) and text[at] in " \n,":
            at += 1
        if at >= len(text) or text[at] == "]":
            return calls, False
        spans = _object_spans(text, at)
        if spans is None:
            return calls, True
        fields, at = spans
        name = json.loads(fields["name"]) if "name" in fields else None
        calls.append((name, fields.get("parameters", "{}")))
    return calls, False


def _object_spans(text: str, at: int) -> tuple[dict[str, str], int] | None:
    """Each key's value text of the JSON object at `at`, and where the object ends; None
    when the object is cut short."""
    if text[at] != "{":
        return None
    fields, at = {}, at + 1
    try:
        while True:
            while text[at] in " \n,":
                at += 1
            if text[at] == "}":
                return fields, at + 1
            key, at = _DECODER.raw_decode(text, at)
            while text[at] in " \n:":
                at += 1
            _, end = _DECODER.raw_decode(text, at)
            fields[key] = text[at:end]
            at = end
    except (ValueError, IndexError):
        return None


def check_output(
    output: str | Path, verify_bodies: list[dict[str, Any]] | None = None
) -> tuple[int, list[str]]:
    """Every episode record of a job output: (episodes checked, their problems). The
    tokenizer is the record's model folder's, when it is one; /verify bodies are matched
    to records by their response id (or their first item's id)."""
    import pyarrow.dataset as pads

    data = Path(output) / "data"
    if not data.exists():
        return 0, []
    table = pads.dataset(str(data), format="parquet", partitioning="hive").to_table()
    if "episode" not in table.column_names:
        return 0, []
    bodies = _by_key(verify_bodies or [])
    tokenizers: dict[str, Any] = {}
    checked, problems = 0, []
    for record in table.to_pylist():
        if not record.get("episode"):
            continue
        checked += 1
        tokenizer = _tokenizer(record.get("model") or "", tokenizers)
        body = bodies.get(_record_key(record))
        where = f"{record['task_id']}#{record['rollout_index']}"
        problems += [f"{where}: {p}" for p in episode_problems(record, tokenizer, body)]
    return checked, problems


def _tokenizer(model: str, cache: dict[str, Any]) -> Any:
    if model not in cache:
        cache[model] = None
        if Path(model, "tokenizer_config.json").exists():
            from transformers import AutoTokenizer

            cache[model] = AutoTokenizer.from_pretrained(model)
    return cache[model]


def _record_key(record: dict[str, Any]) -> str | None:
    if record.get("episode_response"):
        return json.loads(record["episode_response"])["id"]
    items = json.loads(record["episode"])
    return next((i["id"] for i in items if i.get("id")), None)


def _by_key(bodies: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    out: dict[str | None, dict[str, Any]] = {}
    for body in bodies:
        response = body.get("response") or {}
        out[response.get("id")] = body
        first = next((i["id"] for i in response.get("output") or [] if i.get("id")), None)
        out.setdefault(first, body)
    return out
