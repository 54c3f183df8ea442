"""Control characters from inputs are shown, not obeyed: in every console view (the
end-to-end check with the CLI's own bytes is e2e/test_untrusted.py) and in log lines."""

from __future__ import annotations

import io
import logging

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rollout_ray import secrets
from rollout_ray.views.terminal import SafeConsole, visible

ATTACK = "\x1b]52;c;cHduZWQ=\x07\x1b[2J\x9b31m\x00\x7f"


def test_visible_shows_each_control_and_keeps_tabs_newlines_and_text():
    assert visible(ATTACK) == "␛]52;c;cHduZWQ=␇␛[2J\\x9b31m␀␡"
    assert visible("tab\there\nnext é █") == "tab\there\nnext é █"


def test_a_safe_console_prints_no_control_from_any_renderable():
    out = io.StringIO()
    console = SafeConsole(file=out, width=100)
    table = Table(title=ATTACK)
    table.add_column(ATTACK)
    table.add_row(Text(ATTACK))
    console.print(ATTACK, table, Panel(Text(ATTACK), title=ATTACK), markup=False)
    printed = out.getvalue()
    assert "\x1b" not in printed and "\x9b" not in printed and "\x00" not in printed
    assert printed.count("␛]52") == 6  # the text, table title, header, cell, panel title, body


def test_log_lines_show_controls(monkeypatch):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(secrets._FILTER)
    log = logging.getLogger("rollout_ray.test_terminal")
    log.addHandler(handler)
    try:
        log.warning("row said %s", ATTACK)
    finally:
        log.removeHandler(handler)
    assert stream.getvalue() == "row said ␛]52;c;cHduZWQ=␇␛[2J\\x9b31m␀␡\n"
