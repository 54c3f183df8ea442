"""Reasoning models: chat_template_kwargs reach the template, a reasoning parser keeps
the thinking apart from the answer, and verifiers see the answer only."""

from __future__ import annotations

import pytest
from helpers import job_config, read_output, write_jsonl

from rollout_ray import run_job

pytestmark = pytest.mark.slow


def test_thinking_apart_from_the_answer(ray_session, thinking_model, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(thinking_model)
    end = tokenizer.convert_tokens_to_ids("</think>")
    data = write_jsonl(
        tmp_path / "in.jsonl", [{"prompt": f"think {i}", "expected_answer": ""} for i in range(12)]
    )
    sampling = {"max_tokens": 12, "temperature": 1.0, "return_token_ids": True}
    thinking = job_config(
        thinking_model,
        tmp_path / "on",
        [{"path": str(data), "verifier": {"kind": "exact_match"}}],
        sampling=sampling,
        engine={"kind": "vllm", "max_model_len": 512, "reasoning_parser": "deepseek_r1"},
    )
    run_job(thinking)
    records = read_output(tmp_path / "on")
    assert len(records) == 12
    for record in records:
        prompt = tokenizer.decode(record["prompt_token_ids"])
        assert prompt.endswith("<|im_start|>assistant\n<think>\n")
        # (vLLM holds back a last incomplete UTF-8 character that decode shows as U+FFFD)
        ids = record["output_token_ids"]
        generated = tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
        # The parser drops a <think> the model writes itself (the template opened one).
        if "<think>" in generated:
            generated = generated.partition("<think>")[2]
        if end in record["output_token_ids"]:  # closed its thinking: the rest answers
            thought, _, answer = generated.partition("</think>")
            assert record["reasoning_text"] == thought
            assert record["response_text"].rstrip("\ufffd") == answer
        else:  # never closed it: all thinking, no answer
            assert (record["reasoning_text"] or "").rstrip("\ufffd") == generated
            assert record["response_text"] == ""
            # The verifier judged the (empty) answer, not the thinking.
            assert record["reward"] == 1.0
    # chat_template_kwargs reach the template: thinking off closes the block up front.
    off = job_config(
        thinking_model,
        tmp_path / "off",
        [{"path": str(data)}],
        sampling={**sampling, "chat_template_kwargs": {"enable_thinking": False}},
    )
    run_job(off)
    for record in read_output(tmp_path / "off"):
        prompt = tokenizer.decode(record["prompt_token_ids"])
        assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert record["reasoning_text"] is None  # no parser: nothing split
