"""Thinking apart from the answer: vLLM's reasoning parsers on a finished text.

Reasoning models write their thinking before the answer (`<think>...</think>` and the
like). With `engine.reasoning_parser`, the record keeps the thinking in
`reasoning_text` and the answer in `response_text`, so verifiers score the answer,
not the thinking, and exports choose whether to keep it (`keep_reasoning`).
"""

from __future__ import annotations

from typing import Any

from rollout_ray.errors import EngineFailed


class ReasoningSplitter:
    def __init__(self, tokenizer: Any, name: str):
        from vllm.reasoning import ReasoningParserManager

        try:
            parser_cls = ReasoningParserManager.get_reasoning_parser(name)
        except KeyError:
            known = ", ".join(sorted(ReasoningParserManager.list_registered()))
            raise EngineFailed(
                f"engine.reasoning_parser {name!r} is not one of vLLM's: {known}"
            ) from None
        try:
            self.parser = parser_cls(tokenizer)
        except Exception as exc:  # e.g. the model's vocabulary has no <think> token
            raise EngineFailed(
                f"engine.reasoning_parser {name!r} does not fit this model: {exc}"
            ) from None

    def split(self, text: str, template_kwargs: dict[str, Any]) -> tuple[str | None, str]:
        """(thinking, answer) of a finished turn; a turn that never closes its thinking
        is all thinking (answer "")."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        request = ChatCompletionRequest(
            messages=[], model="rollout-ray", chat_template_kwargs=template_kwargs or None
        )
        reasoning, content = self.parser.extract_reasoning(text, request)
        return reasoning, content or ""
