"""Text from rows, model output and servers, made safe to show on a terminal.

Everything the CLI prints may hold text no one here wrote: prompts, responses, task
ids, error messages quoting a row, a verifier's details. A terminal obeys the control
characters in it: OSC 52 writes the user's clipboard, `ESC[2J` clears the screen, other
sequences retitle windows or fake earlier output. Every console the CLI prints through
is a `SafeConsole`: before rich turns its segments into bytes, each control character
in them (C0 but tab and newline, DEL, C1) becomes a visible stand-in (`␛` for ESC,
`\\x9b` for a C1 one), so the text is shown, not obeyed. rich's own styling is not
text: it is added after this, when the output is a terminal, and left alone.
"""

from __future__ import annotations

import os
import re
from typing import Any

from rich.console import Console, ConsoleOptions, RenderHook, RenderResult
from rich.segment import Segment
from rich.text import Text

#: Characters a terminal acts on: C0 controls but tab and newline, DEL, C1 controls.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _stand_in(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # Unicode's control pictures: ␀ .. ␟
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"\\x{code:02x}"


def visible(text: str) -> str:
    """`text` with every control character a terminal would obey shown instead."""
    return CONTROL.sub(_stand_in, text) if CONTROL.search(text) else text


class _Visible:
    """A renderable that renders another one with its text's controls made visible.
    Segments rich marks as control (cursor moves of a live progress bar) pass as they
    are: they are rich's own, not text."""

    def __init__(self, renderable: Any):
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for segment in console.render(self.renderable, options):
            if segment.control or not CONTROL.search(segment.text):
                yield segment
            else:
                yield Segment(visible(segment.text), segment.style)


class _ShowControls(RenderHook):
    def process_renderables(self, renderables: list[Any]) -> list[Any]:
        return [_Visible(r) for r in renderables]


#: Width of output that is not a terminal: wide enough that any table the CLI prints
#: keeps its natural width, so a log holds each table and message whole.
LOG_WIDTH = 1000


class SafeConsole(Console):
    """rich's Console, printing every control character of its text visibly.

    Output that is not a terminal (a CI log, `ray job logs`, a file) is read by tools
    and searched for messages: rich would wrap it at 80 columns, cutting a message
    across lines. There, messages are never wrapped and tables take their natural
    width, unless COLUMNS says otherwise (then tables fit it, and messages still don't
    wrap)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.push_render_hook(_ShowControls())
        self.log_file = not self.is_terminal and not self.is_jupyter
        columns = os.environ.get("COLUMNS", "").isdigit()
        if self.log_file and "width" not in kwargs and not columns:
            self.width = LOG_WIDTH

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Messages (text) are never wrapped in a log file; boxes and tables still lay
        their text out inside themselves (soft wrap would cut it at their edge)."""
        if self.log_file and all(isinstance(o, str | Text) for o in objects):
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)
