"""The episode checker itself (tests/episode_check.py): it must tell a call that never
ran from an answer that merely looks like one.

Seen in the 256-episode forced-call run (benchmarks/agents.py): after its two calls,
SmolLM2's last turn (sampled with tool_choice "none", as Gym's model server would be)
wrote `[{"name":"count","parameters":{"num":11}}]` as its answer. Tokens, message item
and /verify body all held that text; the checker counted it as a call that never ran.
"""

from __future__ import annotations

import json

from episode_check import episode_problems

CALL = '[{"name":"add","parameters":{"n":3}}]'
ANSWER = '[{"name":"count","parameters":{"num":11}}]'  # call-shaped, but an answer


def episode_record(tokenizer, tool_choice: str, answer: str = ANSWER, wrote: str = ANSWER) -> dict:
    """One forced call that ran, then a last turn that wrote `wrote` (call-shaped text
    by default) and answered `answer`."""
    items = [
        {"type": "function_call", "call_id": "c1", "name": "add", "arguments": '{"n":3}'},
        {"type": "function_call_output", "call_id": "c1", "output": '{"total": 3}'},
        {
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": answer}],
        },
    ]
    turn1 = tokenizer.encode(CALL, add_special_tokens=False)
    observed = tokenizer.encode('\n{"total": 3}\n', add_special_tokens=False)
    turn2 = [*tokenizer.encode(wrote, add_special_tokens=False), tokenizer.eos_token_id]
    ids = turn1 + observed + turn2
    mask = [1] * len(turn1) + [0] * len(observed) + [1] * len(turn2)
    response = {"status": "completed", "tool_choice": tool_choice, "output": items}
    return {
        "task_id": "t",
        "rollout_index": 0,
        "episode": json.dumps(items),
        "episode_response": json.dumps(response),
        "finish_reason": "stop",
        "tool_calls": 1,
        "steps": 2,
        "response_text": answer,
        "output_token_ids": ids,
        "output_mask": mask,
        "output_logprobs": [-0.5 if m else 0.0 for m in mask],
        "output_tokens": sum(mask),
    }


def test_a_call_shaped_answer_after_the_calls_are_spent_is_an_answer(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    # Sampled without tools: its text is its answer, and tokens and items agree.
    assert episode_problems(episode_record(tokenizer, "none"), tokenizer) == []
    # The same text from a turn that could call: a call in the tokens that never ran.
    problems = episode_problems(episode_record(tokenizer, "required"), tokenizer)
    assert any("the tokens hold calls [('count'" in p for p in problems), problems


def test_an_empty_answer_is_the_models_only_when_it_wrote_nothing(tiny_model):
    """Seen in CI: the random model's last turn ended at once (an end-of-turn token
    first), an empty answer with finish_reason stop; the checker once took any empty
    answer of a finished episode for a cut call array dropped."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    said_nothing = episode_record(tokenizer, "none", answer="", wrote="")
    assert episode_problems(said_nothing, tokenizer) == []
    # Text in the tokens and an empty answer: what the model wrote was lost.
    lost = episode_problems(episode_record(tokenizer, "none", answer="", wrote="42"), tokenizer)
    assert any("an empty answer, and the tokens say '42'" in p for p in lost), lost
