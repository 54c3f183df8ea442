"""The `rollout-ray` command: parses arguments, loads the config, calls the library.

No logic lives here; every command is a few lines around a library call, and heavy
imports happen inside the commands so that `--help` is instant.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from rollout_ray.errors import JobFault, RolloutRayError, redact

#: -h as well as --help, on every command.
HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    help="Collect LLM rollouts on Ray Data + vLLM, resumable, from a laptop to a cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=HELP,
    epilog="Exit codes: 0 done; 1 the job stopped on a fault (storage, engine, an input "
    "changed, an unexpected error); 2 a usage or config error, or a refused output "
    "(nothing ran); 130 interrupted (committed work is kept).",
)
model_app = typer.Typer(
    help="The embedded default model.", no_args_is_help=True, context_settings=HELP
)
app.add_typer(model_app, name="model")
console = Console(stderr=True)

ConfigArg = Annotated[
    Path | None, typer.Argument(help="Job YAML; omit for the embedded quickstart.")
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Dotted overrides, e.g. sampling.temperature=0.2 datasets.0.limit=5"),
]


def _load(config: Path | None, overrides: list[str] | None, limit: int | None = None):
    from rollout_ray.config import load_config

    items = list(overrides or [])
    if config is not None and "=" in str(config):  # `run key=value` with no config file
        items.insert(0, str(config))
        config = None
    return load_config(config, items, limit=limit)


@app.command()
def run(
    config: ConfigArg = None,
    overrides: OverridesArg = None,
    limit: Annotated[
        int | None, typer.Option(help="Use only the first N rows of every dataset.")
    ] = None,
    pilot: Annotated[
        int | None,
        typer.Option(help="Run N rows of each dataset into OUTPUT-pilot; project the full job."),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(help="Keep running: plan new input files (and grown ones) as they come."),
    ] = False,
    watch_interval: Annotated[
        float, typer.Option(help="Seconds between looks at the inputs, with --watch.")
    ] = 10.0,
    show: Annotated[
        bool, typer.Option(help="Print each rollout (prompt, response, reward) as it lands.")
    ] = False,
    force_new_config: Annotated[
        bool, typer.Option(help="Resume an output that was planned with another config.")
    ] = False,
    dashboard: Annotated[
        bool,
        typer.Option(
            envvar="ROLLOUT_RAY_DASHBOARD",
            help="Start the Ray dashboard with a local Ray (a cluster has its own).",
        ),
    ] = True,
) -> None:
    """Run a job, or resume it: the same command finishes an interrupted job."""
    from rollout_ray.logs import quiet_libraries
    from rollout_ray.run.pipeline import run_job, run_pilot
    from rollout_ray.views.console import ProgressView, print_projection, print_summary, show_piece

    stop_on_ctrl_c()
    quiet_libraries()
    os.environ["ROLLOUT_RAY_DASHBOARD"] = "1" if dashboard else "0"
    job = _load(config, overrides, limit)
    try:
        with ProgressView(console) as view:
            callbacks = {"on_progress": view.update, "on_message": view.message}
            if show:
                callbacks["on_commit"] = lambda commit: show_piece(view.console, commit)
            if pilot:
                result, projection = run_pilot(job, pilot, **callbacks)
            else:
                result = run_job(
                    job,
                    force_new_config=force_new_config,
                    watch_s=watch_interval if watch else 0.0,
                    **callbacks,
                )
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted[/yellow]: committed rollouts are kept; run the same command "
            "again to resume."
        )
        raise typer.Exit(130) from None
    print_summary(Console(), result)
    if pilot:
        print_projection(Console(), projection)


@app.command()
def status(
    output: Annotated[str, typer.Argument(help="The job's output folder or URI.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """How far a job is, read from its manifest alone (works while it runs)."""
    from rollout_ray.views.status import job_status, render_status

    report = job_status(output)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        render_status(Console(), report)


@app.command()
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


@app.command()
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
    from rollout_ray.views.console import print_reverify

    spec = parse_verifier(verifier)
    names = dataset or dataset_names(output)
    result = reverify(output, dest, {name: spec for name in names})
    print_reverify(Console(), result)


@app.command()
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
        bool, typer.Option(help="sft/dpo/rl: rows in a seeded random order.")
    ] = False,
    keep_reasoning: Annotated[
        bool, typer.Option(help="sft/dpo: keep the thinking (as <think>...</think>).")
    ] = False,
    threshold: Annotated[float | None, typer.Option(help="sft: keep reward >= this.")] = None,
    best_of_n: Annotated[bool, typer.Option(help="sft: keep the best rollout per task.")] = False,
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


@app.command("export-kinds")
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


@app.command()
def serve(
    config: Annotated[Path, typer.Argument(help="A config with a `serve:` block.")],
    overrides: OverridesArg = None,
    stop: Annotated[bool, typer.Option("--stop", help="Remove the served model.")] = False,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Serve on a non-loopback host without a key (serve.api_key_env)."
        ),
    ] = False,
) -> None:
    """Serve the config's model on the running Ray cluster (OpenAI-compatible)."""
    from rollout_ray.logs import quiet_libraries
    from rollout_ray.serve import deploy as serving

    quiet_libraries()
    job = _load(config, overrides)
    if stop:
        serving.stop(job)
        console.print(f"stopped {job.serve.name}")
        return
    url = serving.deploy(job, insecure=insecure)
    console.print(f"{job.serve.name} is serving {job.serve.served_model_name or job.model}")
    print(url)


@app.command()
def submit(
    config: Annotated[Path, typer.Argument(help="Job YAML, relative to the working dir.")],
    overrides: OverridesArg = None,
    address: Annotated[
        str, typer.Option(envvar="RAY_ADDRESS", help="The cluster's dashboard address.")
    ] = "http://127.0.0.1:8265",
    working_dir: Annotated[str, typer.Option(help="Folder shipped to the cluster.")] = ".",
    run: Annotated[bool, typer.Option("--run", help="Run it instead of printing it.")] = False,
) -> None:
    """Print (or --run) the `ray job submit` command that runs a job on a cluster."""
    from rollout_ray.run.submit import exec_submit, shell_line, submit_command

    _load(config, overrides)  # refuse a bad config here, not on the cluster
    argv = submit_command(str(config), list(overrides or []), address, working_dir)
    if run:
        exec_submit(argv)
    print(shell_line(argv))


@app.command("config-reference")
def config_reference() -> None:
    """Print every config key with its type, default and meaning (Markdown)."""
    from rollout_ray.config.reference import render_reference

    print(render_reference(), end="")


@model_app.command("prepare")
def model_prepare(
    name: Annotated[
        str, typer.Argument(help="The embedded model's name.")
    ] = "smollm2-135m-instruct",
) -> None:
    """Prepare the embedded model now (otherwise it happens on first use)."""
    from rollout_ray.engines.embedded_model import resolve_model

    path = resolve_model(name, announce=console.print)
    print(path)


def stop_on_ctrl_c() -> None:
    """Ctrl-C stops a run, keeping what is committed; a second Ctrl-C exits at once.

    Set here rather than trusted from the environment: a process started by one that
    ignores SIGINT (a shell's background job, some test runners and supervisors)
    inherits SIG_IGN through exec, and Python then never raises KeyboardInterrupt.
    """
    pressed = []

    def on_interrupt(signum: int, frame: object) -> None:
        pressed.append(signum)
        if len(pressed) > 1:
            os.write(2, b"\ninterrupted again: exiting now\n")
            os._exit(130)
        os.write(2, b"\nstopping: keeping what is committed (Ctrl-C again to exit now)\n")
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _version(value: bool) -> None:
    if value:
        from rollout_ray import __version__

        print(f"rollout-ray {__version__}")
        raise typer.Exit(0)


@app.callback()
def options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", envvar="ROLLOUT_RAY_DEBUG", help="Show tracebacks of unexpected errors."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            envvar="ROLLOUT_RAY_VERBOSE",
            help="Show Ray's, vLLM's and torch's own start-up messages and INFO logs.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Collect LLM rollouts on Ray Data + vLLM, resumable, from a laptop to a cluster."""
    if debug:
        os.environ["ROLLOUT_RAY_DEBUG"] = "1"
    if verbose:
        os.environ["ROLLOUT_RAY_VERBOSE"] = "1"


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except RolloutRayError as exc:
        console.print(f"[red]error:[/red] {escape(redact(str(exc)))}", soft_wrap=True)
        # A job that stopped on a fault of its own (storage, engine, an input changed): 1;
        # refused before anything ran (a bad config or argument, an output that is
        # another job's, no job where one was named): the usage-error code, 2.
        sys.exit(1 if isinstance(exc, JobFault) else 2)
    except Exception as exc:
        if os.environ.get("ROLLOUT_RAY_DEBUG") == "1":
            raise
        first = (redact(str(exc)).strip().splitlines() or [""])[0][:500]
        console.print(
            f"[red]error:[/red] rollout-ray stopped on an unexpected error: "
            f"{type(exc).__name__}: {escape(first)}\nCommitted work is kept; run the same command "
            "to resume. `rollout-ray --debug ...` shows the traceback; please report it.",
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
