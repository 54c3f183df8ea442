"""The commands that read what a job committed: inspect, verify, export, export-kinds.

Registered on the CLI's app by `register_result_commands` (cli.py stays the place for
running jobs). Like every command, they parse and call: the work is in views/, run/
and exports/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from rollout_ray.errors import RolloutRayError
from rollout_ray.views.terminal import SafeConsole as Console

console = Console(stderr=True)
_COMMANDS: list[tuple[str | None, Callable[..., Any]]] = []


def _command(name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        _COMMANDS.append((name, fn))
        return fn

    return add


def register_result_commands(app: typer.Typer) -> None:
    for name, fn in _COMMANDS:
        app.command(name)(fn)


@_command()
def inspect(
    output: Annotated[str, typer.Argument(help="A job's output.")],
    dataset: Annotated[list[str] | None, typer.Option(help="Only these datasets.")] = None,
    task: Annotated[str | None, typer.Option(help="A task id, or a prefix of task ids.")] = None,
    min_reward: Annotated[float | None, typer.Option(help="Examples with reward >= this.")] = None,
    max_reward: Annotated[float | None, typer.Option(help="Examples with reward <= this.")] = None,
    lowest: Annotated[int, typer.Option(help="How many lowest-reward examples.")] = 5,
    sample: Annotated[int, typer.Option(help="How many sampled examples.")] = 5,
    html: Annotated[str | None, typer.Option(help="Also write a self-contained page.")] = None,
    write: Annotated[
        str | None,
        typer.Option(help="Also write every matching rollout to this .jsonl file."),
    ] = None,
) -> None:
    """Look at a job's rollouts: rewards per task, lowest examples, a histogram."""
    from rollout_ray.views.inspect_html import write_html
    from rollout_ray.views.inspect_report import build_report
    from rollout_ray.views.inspect_terminal import render_report
    from rollout_ray.views.selection import write_selection

    try:
        report = build_report(output, dataset, task, min_reward, max_reward, lowest, sample)
        render_report(Console(), report)
        if html:
            write_html(report, html)
            console.print(f"report: {html}")
        if write:
            count = write_selection(output, write, dataset, task, min_reward, max_reward)
            console.print(f"{count:,} matching rollouts written to {write}")
    except ValueError as exc:
        raise RolloutRayError(str(exc)) from None


@_command()
def verify(
    output: Annotated[str, typer.Argument(help="A finished job's output.")],
    dest: Annotated[str, typer.Argument(help="Where the re-scored job goes (a new output).")],
    verifier: Annotated[
        str,
        typer.Option(help="Verifier as YAML/JSON, e.g. '{kind: math}', or @file.yaml."),
    ],
    dataset: Annotated[
        list[str] | None, typer.Option(help="Re-score only these datasets (default: all).")
    ] = None,
) -> None:
    """Re-score stored rollouts with another verifier, without generating again."""
    from rollout_ray.config import parse_verifier
    from rollout_ray.output.results import dataset_names
    from rollout_ray.run.reverify import reverify
    from rollout_ray.views.summary import print_reverify

    spec = parse_verifier(verifier)
    names = dataset or dataset_names(output)
    result = reverify(output, dest, {name: spec for name in names})
    print_reverify(Console(), result)


@_command()
def export(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="sft, dpo, rl, eval, mix or gym (see export-kinds).")],
    outputs: Annotated[
        list[str],
        typer.Argument(
            help="A job's output, or several exported as one (not mix).", metavar="OUTPUT..."
        ),
    ],
    dest: Annotated[str, typer.Argument(help="File to write: .jsonl or .parquet (.json: eval).")],
    weights: Annotated[
        str | None, typer.Option(help="mix: shares per dataset, e.g. math=0.6,code=0.4.")
    ] = None,
    total: Annotated[int | None, typer.Option(help="mix: rows in the mix.")] = None,
    seed: Annotated[
        int, typer.Option(help="mix, --shuffle, --val-fraction: the seed of the draw.")
    ] = 0,
    val_fraction: Annotated[
        float | None,
        typer.Option(help="sft/dpo/rl: this share of tasks to DEST's .val sibling."),
    ] = None,
    shuffle: Annotated[
        bool, typer.Option("--shuffle", help="sft/dpo/rl: rows in a seeded random order.")
    ] = False,
    keep_reasoning: Annotated[
        bool,
        typer.Option("--keep-reasoning", help="sft/dpo: keep the thinking (<think>...</think>)."),
    ] = False,
    threshold: Annotated[float | None, typer.Option(help="sft: keep reward >= this.")] = None,
    best_of_n: Annotated[
        bool, typer.Option("--best-of-n", help="sft: keep the best rollout per task.")
    ] = False,
    format: Annotated[
        str,
        typer.Option("--format", help="sft/mix: TRL's layout, messages or prompt-completion."),
    ] = "messages",
    min_gap: Annotated[float, typer.Option(help="dpo: least reward gap of a pair.")] = 0.0,
    scale: Annotated[str, typer.Option(help="rl: advantage scaling, group or none.")] = "group",
    dataset: Annotated[list[str] | None, typer.Option(help="Only these datasets.")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Any option of the kind as key=value (a YAML value), e.g. -o ks=[1,4,8].",
        ),
    ] = None,
) -> None:
    """Turn committed rollouts into a training file, a weighted mix, or scores (eval)."""
    from rollout_ray.exports import export as run_export
    from rollout_ray.views.console import print_export

    flags = {
        "weights": _weights(weights),
        "total": total,
        "seed": seed,
        "threshold": threshold,
        "best_of_n": best_of_n,
        "min_gap": min_gap,
        "scale": scale,
        "val_fraction": val_fraction,
        "shuffle": shuffle,
        "keep_reasoning": keep_reasoning,
        "format": format,
    }
    given = {
        name: value
        for name, value in flags.items()
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    }
    given.update(_key_values(option or []))
    try:  # the kind's own signature says which options it takes (exports.EXPORTERS)
        source = outputs[0] if len(outputs) == 1 else outputs
        report = run_export(kind, source, dest, datasets=dataset, **given)
    except ValueError as exc:
        raise RolloutRayError(str(exc)) from None
    print_export(Console(), report)


@_command("export-kinds")
def export_kinds() -> None:
    """List the export kinds and the options each takes, with their defaults."""
    from rollout_ray.exports import EXPORTERS, options

    for kind in EXPORTERS:
        taken = ", ".join(f"{k}={v!r}" for k, v in options(kind).items())
        typer.echo(f"{kind}: {taken}")


def _key_values(pairs: list[str]) -> dict[str, object]:
    import yaml

    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise RolloutRayError(f"--option must look like key=value; got {pair!r}")
        values[key.strip().replace("-", "_")] = yaml.safe_load(text)
    return values


def _weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    try:
        return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise RolloutRayError(f"--weights must look like a=0.6,b=0.4; got {text!r}") from None
