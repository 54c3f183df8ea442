"""Episode turns on a local tokenizer: the next prompt's tokens, and the calls in a turn.

The episode's token ids only ever grow. A turn's prompt is every token so far plus
the tokens of what came back (tool outputs), rendered by the model's chat template as
the difference between the conversation with and without them. Earlier turns are never
rendered again, so the model continues from exactly the tokens it wrote (vLLM's prefix
cache then skips their prefill, and an RL trainer sees what was sampled, not a
re-tokenization of it).

Chat templates that ignore `tools` (SmolLM2's, for one) get the tools as a system
message in the Hermes convention, which the default `hermes` parser reads back.
"""

from __future__ import annotations

import json
import os
from typing import Any

from rollout_ray.chat.forced import read_forced
from rollout_ray.chat.tools import hermes_system_text
from rollout_ray.engines.base import Conversation, ToolCall
from rollout_ray.errors import RowError


class TurnRenderer:
    def __init__(self, tokenizer: Any, tool_parser: str):
        self.tokenizer = tokenizer
        self.parser_name = tool_parser
        self._parser_cls: Any = None
        self._renders_tools: dict[str, bool] = {}
        self._renders_calls: bool | None = None
        self._tail: str | None = None
        special = getattr(tokenizer, "all_special_ids", None) or []
        self.special_ids = set(special)

    # ---------------------------------------------------------------- rendering

    def _render(self, conv: Conversation, messages: list[dict], generation: bool) -> str:
        tools = conv.tools or None
        if tools and not self._template_renders_tools(tools):
            messages = _with_tools_in_system(messages, tools)
            tools = None
        if not self._template_renders_calls() and any(m.get("tool_calls") for m in messages):
            # The calls would vanish from the prompt: write them as the model was told to
            # (the Hermes convention of the system message above).
            messages = [_calls_as_text(m) if m.get("tool_calls") else m for m in messages]
        try:
            return self.tokenizer.apply_chat_template(
                messages,
                tools=tools,
                tokenize=False,
                add_generation_prompt=generation,
                **conv.template_kwargs,
            )
        except Exception as exc:
            # Templates without a `tool` role (or assistant tool_calls) get them as text;
            # the record says so.
            note = (
                f"the chat template rejected the episode ({type(exc).__name__}: "
                f"{str(exc)[:200]}); it was rendered as plain text: calls as <tool_call> "
                "text, tool outputs as user <tool_response> messages"
            )
            if note not in conv.warnings:
                conv.warnings.append(note)
            return self.tokenizer.apply_chat_template(
                _as_plain_text(messages),
                tools=tools,
                tokenize=False,
                add_generation_prompt=generation,
                **conv.template_kwargs,
            )

    def render(self, messages: list[dict], template_kwargs: dict[str, Any]) -> str:
        """A single turn's prompt (no tools offered), with earlier calls a template
        would drop written as text.

        Raises:
            Exception: whatever the template raises.
        """
        if not self._template_renders_calls() and any(m.get("tool_calls") for m in messages):
            messages = [_calls_as_text(m) if m.get("tool_calls") else m for m in messages]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **template_kwargs
        )

    def _template_renders_calls(self) -> bool:
        """Whether the chat template writes an assistant message's `tool_calls` (many
        plain ChatML templates write only `content`)."""
        if self._renders_calls is None:
            probe = [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]},
            ]
            try:
                text = self.tokenizer.apply_chat_template(probe, tokenize=False)
                self._renders_calls = _PROBE_CALL["function"]["name"] in text
            except Exception:
                self._renders_calls = False
        return self._renders_calls

    def _template_renders_tools(self, tools: list[dict]) -> bool:
        key = json.dumps([t["function"]["name"] for t in tools])
        if key not in self._renders_tools:
            probe = [{"role": "user", "content": "x"}]
            try:
                text = self.tokenizer.apply_chat_template(
                    probe, tools=tools, tokenize=False, add_generation_prompt=True
                )
                self._renders_tools[key] = tools[0]["function"]["name"] in text
            except Exception:
                self._renders_tools[key] = False
        return self._renders_tools[key]

    def prompt_ids(
        self, conv: Conversation, max_model_len: int | None, generation: bool = True
    ) -> list[int]:
        """Every token of the episode so far, with the new messages appended.

        Args:
            conv: the episode.
            max_model_len: the context; None: no check (the episode's closing tokens).
            generation: end with the template's generation prompt (the next turn's).

        Raises:
            RowError: the template rejects the messages, or they fill the context.
        """
        try:
            if conv.token_ids is None:
                text = self._render(conv, conv.messages, generation)
                ids = self.tokenizer.encode(text, add_special_tokens=False)
                conv.token_ids, conv.prompt_len = ids, len(ids)
                conv.mask, conv.logprobs = [0] * len(ids), [0.0] * len(ids)
            elif conv.rendered < len(conv.messages):
                # The model's own reply is in the tokens already: render from after it.
                start = conv.rendered
                if conv.messages[start].get("role") == "assistant":
                    start += 1
                before = self._render(conv, conv.messages[:start], False)
                after = self._render(conv, conv.messages, generation)
                delta = after[_common_prefix(before, after) :]
                added = self.tokenizer.encode(conv.glue + delta, add_special_tokens=False)
                conv.token_ids += added
                conv.mask += [0] * len(added)
                conv.logprobs += [0.0] * len(added)
                conv.glue = ""
        except RowError:
            raise
        except Exception as exc:
            reason = f"the model's chat template rejected the episode: {exc}"
            raise RowError(reason, "prompt") from None
        conv.rendered = len(conv.messages)
        if max_model_len is not None and len(conv.token_ids) >= max_model_len:
            raise RowError(
                f"the episode is {len(conv.token_ids)} tokens; the model's context is "
                f"{max_model_len} (engine.max_model_len)",
                "prompt",
            )
        return conv.token_ids

    def record_turn(self, conv: Conversation, ids: list[int], logprobs: list[float] | None) -> None:
        """Append the model's tokens, and note what the template adds after them."""
        assert conv.token_ids is not None
        conv.token_ids += ids
        conv.mask += [1] * len(ids)
        conv.logprobs += logprobs if logprobs and len(logprobs) == len(ids) else [0.0] * len(ids)
        conv.glue = self._glue(conv, ids)

    def _glue(self, conv: Conversation, ids: list[int]) -> str:
        """The template's text after an assistant turn's end token (e.g. "\\n" after
        ChatML's <|im_end|>), or its whole end-of-turn when the model stopped without one
        (a stop string)."""
        if self._tail is None:  # the same for every turn: rendered once
            probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
            try:
                rendered = self.tokenizer.apply_chat_template(probe, tokenize=False)
                self._tail = rendered[rendered.rfind("y") + 1 :]
            except Exception:
                self._tail = ""
        tail = self._tail
        if ids and ids[-1] in self.special_ids:
            end = self.tokenizer.decode([ids[-1]])
            at = tail.find(end)
            return tail[at + len(end) :] if at >= 0 else ""
        return tail

    # ---------------------------------------------------------------- parsing

    def calls(self, text: str, conv: Conversation, cut: bool) -> tuple[str, list[ToolCall]]:
        """The turn's text without call markup, and its tool calls, arguments as the
        model wrote them. `cut`: max_tokens ended the turn, perhaps inside a call; the
        calls it finished are kept (a forced turn that finished none keeps its text)."""
        if not conv.tools or conv.tool_choice == "none":
            return text, []
        if conv.tool_choice != "auto":
            found = read_forced(text, conv.tool_choice)
            calls = [ToolCall(_call_id(), name, args) for name, args in found.calls]
            return ("" if calls else text), calls
        parser = self._parser(conv)
        request = self._request(conv)
        info = parser.extract_tool_calls(text, request)
        if not info.tools_called and cut:
            for end in _cut_points(text):  # the longest prefix whose calls all finished
                info = parser.extract_tool_calls(text[:end], request)
                if info.tools_called:
                    break
        if not info.tools_called:
            return text, []
        calls, at = [], 0
        for c in info.tool_calls:
            arguments, at = _as_written(text, c.function.arguments or "{}", at)
            calls.append(ToolCall(c.id or _call_id(), c.function.name, arguments))
        return info.content or "", calls

    def _parser(self, conv: Conversation) -> Any:
        if self._parser_cls is None:
            from vllm.tool_parsers import ToolParserManager

            try:
                self._parser_cls = ToolParserManager.get_tool_parser(self.parser_name)
            except KeyError:
                known = ", ".join(sorted(ToolParserManager.list_registered()))
                raise RowError(
                    f"engine.tool_parser {self.parser_name!r} is not one of vLLM's: {known}",
                    "generate",
                ) from None
        return self._parser_cls(self.tokenizer)

    def _request(self, conv: Conversation) -> Any:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        return ChatCompletionRequest(messages=[], model="rollout-ray", tools=conv.tools)


#: A call only a template that writes `tool_calls` shows (see _template_renders_calls).
_PROBE_CALL = {
    "id": "call_probe",
    "type": "function",
    "function": {"name": "probe_fn_7f3a", "arguments": {"a": 1}},
}
_DECODER = json.JSONDecoder()


def _as_written(text: str, parsed: str, start: int) -> tuple[str, int]:
    """A call's arguments as the model wrote them in `text` (parsers re-serialise them:
    hermes writes `json.dumps` of what it read), searched from `start`; the parser's
    own text when they are not there as a JSON object (a pythonic call)."""
    try:
        wanted = json.loads(parsed)
    except ValueError:
        return parsed, start
    at = text.find("{", start)
    while at >= 0:
        try:
            value, end = _DECODER.raw_decode(text, at)
        except ValueError:
            value, end = None, at
        if isinstance(value, dict) and value == wanted:
            return text[at:end], end
        at = text.find("{", at + 1)
    return parsed, start


def _cut_points(text: str, most: int = 200) -> list[int]:
    """Where a turn cut inside a call may end its last finished one: after each closing
    character, from the end."""
    ends = [i + 1 for i in range(len(text) - 1, -1, -1) if text[i] in ">}])"]
    return ends[:most]


def _call_id() -> str:
    return f"call_{os.urandom(12).hex()}"


def _common_prefix(a: str, b: str) -> int:
    if b.startswith(a):
        return len(a)
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _with_tools_in_system(messages: list[dict], tools: list[dict]) -> list[dict]:
    text = hermes_system_text(tools)
    if messages and messages[0].get("role") == "system":
        first = {**messages[0], "content": f"{messages[0].get('content') or ''}\n\n{text}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _calls_as_text(message: dict) -> dict:
    """An assistant message with its calls written into its content, Hermes style."""
    return _as_plain_text([message])[0]


def _as_plain_text(messages: list[dict]) -> list[dict]:
    """Assistant tool calls as <tool_call> text, tool replies as user <tool_response>s."""
    out = []
    for m in messages:
        if m.get("role") == "tool":
            body = f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"
            out.append({"role": "user", "content": body})
        elif m.get("role") == "assistant" and m.get("tool_calls"):
            calls = "".join(
                "\n<tool_call>\n" + _call_json(c["function"]) + "\n</tool_call>"
                for c in m["tool_calls"]
            )
            out.append({"role": "assistant", "content": f"{m.get('content') or ''}{calls}"})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out


def _call_json(function: dict) -> str:
    """`{"name": ..., "arguments": ...}` with the arguments as written when they are
    JSON text (not re-serialised)."""
    arguments = function["arguments"]
    if isinstance(arguments, str):
        try:
            json.loads(arguments)
        except ValueError:
            arguments = json.dumps(arguments)
    else:
        arguments = json.dumps(arguments, ensure_ascii=False)
    return f'{{"name": {json.dumps(function["name"])}, "arguments": {arguments}}}'
