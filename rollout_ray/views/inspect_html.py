"""One self-contained HTML page of an inspect report: inline CSS, SVG plots, no network."""

from __future__ import annotations

import html
from typing import Any

from rollout_ray import storage
from rollout_ray.views.inspect_report import Example, InspectReport
from rollout_ray.views.reading import headline, ranged
from rollout_ray.views.terminal import visible

#: Per-task rows in the page (lowest mean reward first); the plots cover every task.
HTML_TASKS = 1000
_NAME = ' class="name"'

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px;
  padding: 1em 2em; color: #1d2330; background: #fbfbfd; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { margin-top: 1.8em; font-size: 1.2em;
  border-bottom: 1px solid #d8dbe3; padding-bottom: .2em; }
nav a { margin-right: 1em; } .meta { color: #5b6273; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #d8dbe3; padding: .25em .6em; text-align: right; }
th { background: #eef0f5; } td.name, th.name { text-align: left; }
table.sortable th { cursor: pointer; } table.sortable th:hover { background: #dde2ee; }
.scroll { max-height: 480px; overflow: auto; display: inline-block; }
.ex { border: 1px solid #d8dbe3; border-radius: 6px; background: #fff; margin: .8em 0;
  padding: .5em .8em; } .exhead { font-weight: 600; } .kv { color: #3d4457; margin: .2em 0; }
.ex pre { white-space: pre-wrap; word-break: break-word; background: #f4f5f8; margin: .3em 0;
  padding: .5em; border-radius: 4px; max-height: 360px; overflow: auto; }
svg { background: #fff; border: 1px solid #d8dbe3; } svg text { font: 10px system-ui; }
.bar { fill: #4c72b0; } .dot { fill: #c44e52; fill-opacity: .45; } .axis { stroke: #8a90a0; }
"""

SORT_JS = """
const sortBy = (th, i) => () => {
  const body = th.closest("table").tBodies[0], up = th.dataset.dir !== "asc";
  th.dataset.dir = up ? "asc" : "desc";
  const key = r => { const v = r.cells[i].dataset.v ?? r.cells[i].textContent;
    return v === "" || isNaN(v) ? v : Number(v); };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
};
document.querySelectorAll("table.sortable th").forEach((th, i) => th.onclick = sortBy(th, i));
"""


def write_html(report: InspectReport, path: str) -> None:
    """Write the page to a local path or any fsspec URI, atomically, so a report can be
    opened anywhere (a laptop, a bucket, a CI artifact) without network access."""
    storage.write_bytes_atomic(path, render_html(report).encode("utf-8"))


def render_html(report: InspectReport) -> str:
    """The page as text; every value from the output goes through `html.escape`."""
    sections = [
        ("totals", "Datasets", _totals(report)),
        ("histogram", "Reward histogram", _histogram(report)),
        ("tasks", "Per-task reward", _tasks(report)),
        ("scatter", "Reward vs output tokens", _scatter(report.scatter)),
        ("lowest", "Lowest-reward rollouts", _examples(report.lowest)),
        ("samples", "Sampled rollouts", _examples(report.samples)),
        ("failures", "Failures", _failures(report.failures)),
    ]
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{k}"><h2>{t}</h2>{c}</section>' for k, t, c in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>rollout-ray inspect: {_e(report.output)}</title><style>{CSS}</style></head>"
        f"<body><h1>rollout-ray inspect</h1><p class='meta'>{_e(headline(report))}</p>"
        f"<nav>{nav}</nav>{body}<script>{SORT_JS}</script></body></html>\n"
    )


def _e(value: Any) -> str:
    """Escaped for HTML, and control characters shown (as the terminal views show them):
    a browser ignores them, but `cat report.html` in a terminal would obey them."""
    return html.escape(visible("-" if value is None else str(value)), quote=True)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[Any]], names: int = 1, cls: str = "") -> str:
    """A table whose first `names` columns (and a `finish reasons` list) are text; cells are
    escaped here. A cell may be (shown, sort value) so sorting goes by number, not text."""
    text = [i < names or h == "finish reasons" for i, h in enumerate(header)]
    head = "".join(
        f"<th{_NAME if t else ''}>{_e(h)}</th>" for h, t in zip(header, text, strict=True)
    )
    lines = []
    for row in rows:
        cells = []
        for cell, t in zip(row, text, strict=True):
            shown, key = cell if isinstance(cell, tuple) else (cell, None)
            attrs = (_NAME if t else "") + ("" if key is None else f' data-v="{_e(key)}"')
            cells.append(f"<td{attrs}>{_e(shown)}</td>")
        lines.append(f"<tr>{''.join(cells)}</tr>")
    table = f"<thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody>"
    return f'<table class="{cls}">{table}</table>' if cls else f"<table>{table}</table>"


def _totals(report: InspectReport) -> str:
    in_range = ["in reward range"] if ranged(report) else []
    header = ["dataset", "rollouts", *in_range, "tasks", "scored", "mean reward"]
    header += ["mean output tokens"]
    rows = []
    for d in report.datasets:
        finish = ", ".join(f"{k}: {v:,}" for k, v in d.finish_reasons.items())
        counts = [f"{n:,}" for n in (d.rollouts, *([d.in_range] if in_range else []))]
        counts += [f"{d.tasks:,}", f"{d.scored:,}"]
        rows.append(
            [d.dataset, *counts, _num(d.mean_reward), _num(d.mean_output_tokens, 1), finish]
        )
    return _table([*header, "finish reasons"], rows) if rows else "<p>No rollouts.</p>"


def _histogram(report: InspectReport) -> str:
    """One histogram per dataset: datasets' rewards differ in kind and scale."""
    parts = []
    for name, histogram in report.histograms.items():
        shown = {k: v for k, v in histogram.items() if v or k not in ("<0", ">1")}
        parts.append(f"<h3>{_e(name)}</h3>" + _bars(shown, "rollouts"))
    return "".join(parts) + (
        f"<p>{report.unscored:,} rollouts with no reward (not in the histograms).</p>"
    )


def _tasks(report: InspectReport) -> str:
    s = report.signal
    summary = (
        f"<p>{s['tasks']:,} tasks ({s['scored_tasks']:,} scored). <b>{s['all_equal']:,}</b> "
        f"have all-equal rewards, so no signal for DPO/GRPO: {s['all_zero']:,} all 0, "
        f"{s['all_one']:,} all 1. {s['single_rollout']:,} have a single scored rollout.</p>"
    )
    shown = {k: v for k, v in report.task_mean_histogram.items() if v or k not in ("<0", ">1")}
    plot = "<p>Distribution of per-task mean reward:</p>" + _bars(shown, "tasks")
    rows = [
        [t.dataset, t.task_id, (t.rollouts, t.rollouts), (t.scored, t.scored)]
        + [(_num(v), "" if v is None else v) for v in (t.mean, t.std, t.min, t.max)]
        for t in report.tasks[:HTML_TASKS]
    ]
    header = ["dataset", "task", "rollouts", "scored", "mean", "std", "min", "max"]
    note = (
        f"<p>{len(rows):,} of {len(report.tasks):,} tasks, lowest mean reward first; "
        "click a column to sort.</p>"
    )
    table = f'<div class="scroll">{_table(header, rows, names=2, cls="sortable")}</div>'
    return summary + plot + note + table


def _bars(counts: dict[str, int], unit: str, width: int = 640, height: int = 220) -> str:
    """A bar chart with each count above its bar and its label below."""
    pad, top = 28, max(counts.values(), default=0) or 1
    step = (width - 2 * pad) / max(len(counts), 1)
    parts = [_line(pad, height - pad, width - pad, height - pad)]
    for i, (label, count) in enumerate(counts.items()):
        h = (height - 2.5 * pad) * count / top
        x, y = pad + i * step, height - pad - h
        parts.append(
            f'<rect class="bar" x="{x + 3:.1f}" y="{y:.1f}" width="{step - 6:.1f}" '
            f'height="{h:.1f}">'
            f"<title>{_e(label)}: {count:,} {unit}</title></rect>"
            f'<text x="{x + step / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle">{count:,}</text>'
            f'<text x="{x + step / 2:.1f}" y="{height - pad + 14}" text-anchor="middle">'
            f"{_e(label)}</text>"
        )
    return _svg(width, height, parts, f"histogram of {unit}")


def _scatter(points: list[list[float]], width: int = 640, height: int = 300) -> str:
    """Reward against output tokens on a bounded random sample of scored rollouts."""
    if not points:
        return "<p>No scored rollouts with token counts.</p>"
    pad = 40
    xmax = max(p[0] for p in points) or 1.0
    ylo, yhi = min(0.0, *(p[1] for p in points)), max(1.0, *(p[1] for p in points))
    sx = lambda v: pad + (width - 2 * pad) * v / xmax  # noqa: E731
    sy = lambda v: height - pad - (height - 2 * pad) * (v - ylo) / ((yhi - ylo) or 1)  # noqa: E731
    parts = [
        _line(pad, height - pad, width - pad, height - pad),
        _line(pad, pad, pad, height - pad),
        f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle">output tokens</text>',
        f'<text x="10" y="{height / 2}" transform="rotate(-90 10 {height / 2})">reward</text>',
    ]
    for v in (0, xmax / 2, xmax):
        parts.append(
            f'<text x="{sx(v):.1f}" y="{height - pad + 14}" text-anchor="middle">{v:,.0f}</text>'
        )
    for v in (ylo, (ylo + yhi) / 2, yhi):
        parts.append(f'<text x="{pad - 4}" y="{sy(v) + 3:.1f}" text-anchor="end">{v:.2g}</text>')
    for tokens, reward in points:
        parts.append(
            f'<circle class="dot" cx="{sx(tokens):.1f}" cy="{sy(reward):.1f}" r="2.5">'
            f"<title>{tokens:,.0f} tokens, reward {reward:.3g}</title></circle>"
        )
    note = f"<p>{len(points):,} rollouts, sampled at random from those matching.</p>"
    return _svg(width, height, parts, "reward against output tokens") + note


def _line(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line class="axis" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"/>'


def _svg(width: int, height: int, parts: list[str], label: str) -> str:
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(label)}">{"".join(parts)}</svg>'
    )


def _examples(examples: list[Example]) -> str:
    if not examples:
        return "<p>No matching rollouts.</p>"
    cards = []
    for x in examples:
        head = (
            f"{_e(x.dataset)} / {_e(x.task_id)} #{x.rollout_index} · reward {_num(x.reward)}"
            f" · finish {_e(x.finish_reason)} · {_e(x.output_tokens)} output tokens"
        )
        answers = (
            f"<b>extracted</b> {_e(x.extracted_answer)} &nbsp; "
            f"<b>expected</b> {_e(x.expected_answer)}"
        )
        parts = [("prompt (last user message)", x.prompt)]
        if x.turns:
            parts.append(("episode, turn by turn", "\n".join(x.turns)))
        parts.append(("response", x.response))
        texts = "".join(
            f"<details open><summary>{label}</summary><pre>{_e(text)}</pre></details>"
            for label, text in parts
        )
        head = f'<div class="exhead">{head}</div><div class="kv">{answers}</div>'
        cards.append(f'<div class="ex">{head}{texts}</div>')
    return "".join(cards)


def _failures(failures: list[dict[str, Any]]) -> str:
    if not failures:
        return "<p>No failures.</p>"
    header = ["dataset", "stage", "error class", "count", "retried"]
    rows = [
        [f[k] for k in ("dataset", "stage", "error_class")]
        + [f"{f['count']:,}", f"{f['retried']:,}"]
        for f in failures
    ]
    note = "<p>count: missing from the output now; retried: failed, then redone by a retry.</p>"
    return _table(header, rows, names=3) + note
