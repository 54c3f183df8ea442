"""The `rollout-ray` command: parses arguments, loads the config, calls the library.

No logic lives here; every command is a few lines around a library call.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rollout_ray.errors import RolloutRayError

app = typer.Typer(
    help="Collect LLM rollouts on Ray Data + vLLM, resumable, from a laptop to a cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
model_app = typer.Typer(help="The embedded default model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
console = Console(stderr=True)


@app.command(context_settings={"allow_extra_args": False})
def run(
    config: Annotated[
        Path | None, typer.Argument(help="Job YAML; omit for the embedded quickstart.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted overrides, e.g. sampling.temperature=0.2 datasets.0.limit=5"),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Use only the first N rows of every dataset.")
    ] = None,
    force_new_config: Annotated[
        bool, typer.Option(help="Resume an output that was planned with another config.")
    ] = False,
) -> None:
    """Run a job, or resume it: the same command finishes an interrupted job."""
    from rollout_ray.config import load_config
    from rollout_ray.console import ProgressView, print_summary
    from rollout_ray.logs import quiet_libraries
    from rollout_ray.pipeline import run_job

    quiet_libraries()
    items = list(overrides or [])
    if config is not None and "=" in str(config):
        items.insert(0, str(config))
        config = None
    job = load_config(config, items)
    if limit is not None:
        for i in range(len(job.datasets)):
            items.append(f"datasets.{i}.limit={limit}")
        job = load_config(config, items)
    try:
        with ProgressView(console) as view:
            result = run_job(
                job,
                force_new_config=force_new_config,
                on_progress=view.update,
                on_message=view.message,
            )
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted[/yellow]: committed rollouts are kept; run the same command "
            "again to resume."
        )
        raise typer.Exit(130) from None
    print_summary(Console(), result)


@app.command()
def status(
    output: Annotated[str, typer.Argument(help="The job's output folder or URI.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """How far a job is, read from its manifest alone (works while it runs)."""
    from rollout_ray.status import job_status, render_status

    report = job_status(output)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        render_status(Console(), report)


@model_app.command("prepare")
def model_prepare(
    name: Annotated[
        str, typer.Argument(help="The embedded model's name.")
    ] = "smollm2-135m-instruct",
) -> None:
    """Prepare the embedded model now (otherwise it happens on first use)."""
    from rollout_ray.models import resolve_model

    path = resolve_model(name, announce=console.print)
    print(path)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except RolloutRayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
