"""The `rollout-ray` command: parses arguments, loads the config, calls the library.

No logic lives here; every command is a few lines around a library call, and heavy
imports happen inside the commands so that `--help` is instant.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from typer.core import TyperGroup

from rollout_ray.cli_results import register_result_commands
from rollout_ray.errors import JobFault, RolloutRayError, redact
from rollout_ray.views.terminal import SafeConsole as Console

#: -h as well as --help, on every command.
HELP = {"help_option_names": ["-h", "--help"]}


class _Commands(TyperGroup):
    """Every exception a command raises reaches `fail`, the one place that turns it
    into a message and an exit code. Left to the CLI framework (click), an EOFError
    (a decompressor's, a user module's) and a KeyboardInterrupt outside `run` would be
    taken for the end of the user's typing: a bare "Aborted!" and exit 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # the framework's own: --help, usage errors, exits a command asked for
        except (Exception, KeyboardInterrupt) as exc:
            fail(exc)


app = typer.Typer(
    cls=_Commands,
    help="Collect LLM rollouts on Ray Data + vLLM, resumable, from a laptop to a cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=HELP,
    epilog="Exit codes: 0 done; 1 the job stopped on a fault (storage, engine, an input "
    "changed, an unexpected error) or every rollout of the run failed for one cause; 2 a "
    "usage or config error, a refused output (nothing ran), or an export with no rows to "
    "write; 130 interrupted (committed work is kept).",
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
        bool, typer.Option("--watch", help="Keep running: plan new and grown input files.")
    ] = False,
    watch_interval: Annotated[
        float, typer.Option(help="Seconds between looks at the inputs, with --watch.")
    ] = 10.0,
    show: Annotated[
        bool, typer.Option("--show", help="Print each rollout (prompt, response, reward).")
    ] = False,
    force_new_config: Annotated[
        bool, typer.Option("--force-new-config", help="Resume an output of another config.")
    ] = False,
    dashboard: Annotated[
        bool,
        typer.Option(
            envvar="ROLLOUT_RAY_DASHBOARD",
            help="Start the Ray dashboard with a local Ray (a cluster has its own).",
        ),
    ] = True,
    warm: Annotated[
        bool,
        typer.Option(
            envvar="ROLLOUT_RAY_WARM",
            help="Run on a warm engine of the same model and settings (`rollout-ray up`).",
        ),
    ] = True,
) -> None:
    """Run a job, or resume it: the same command finishes an interrupted job."""
    from rollout_ray.logs import quiet_libraries
    from rollout_ray.run import interrupts
    from rollout_ray.run.pipeline import RunInterrupted, run_job, run_pilot
    from rollout_ray.run.verdict import EveryRolloutFailed
    from rollout_ray.views.console import (
        ProgressView,
        kept_line,
        print_phases,
        print_projection,
        show_piece,
    )
    from rollout_ray.views.summary import print_summary

    interrupts.install_for_process()
    quiet_libraries()
    os.environ["ROLLOUT_RAY_DASHBOARD"] = "1" if dashboard else "0"
    os.environ["ROLLOUT_RAY_WARM"] = "1" if warm else "0"
    job = _load(config, overrides, limit)
    try:
        with ProgressView(console) as view:
            callbacks = {"on_progress": view.update, "on_message": view.message}
            if show:
                callbacks["on_commit"] = lambda commit: show_piece(view.console, commit)
            if pilot:
                result, projection = run_pilot(job, pilot, process_exits=True, **callbacks)
            else:
                result = run_job(
                    job,
                    force_new_config=force_new_config,
                    watch_s=watch_interval if watch else 0.0,
                    process_exits=True,
                    **callbacks,
                )
    except RunInterrupted as stopped:
        print_summary(Console(), stopped.result)
        console.print(f"[yellow]interrupted[/yellow]: {kept_line(stopped.result)}")
        raise typer.Exit(130) from None
    except EveryRolloutFailed as failed:
        print_summary(Console(), failed.result)  # then the cause, as any job fault
        raise
    print_summary(Console(), result)
    if os.environ.get("ROLLOUT_RAY_VERBOSE") == "1":
        print_phases(Console(), result.metrics)
    if pilot:
        print_projection(Console(), projection)


@app.command()
def status(
    output: Annotated[str, typer.Argument(help="The job's output folder or URI.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Also check the output against its commit records (exit 1 if it fails).",
        ),
    ] = False,
) -> None:
    """How far a job is, read from its manifest alone (works while it runs)."""
    from rollout_ray.views.status import job_status, render_check, render_status

    report = job_status(output)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        render_status(Console(), report)
    if check:
        from rollout_ray.output.integrity import check_output

        found = check_output(output)
        render_check(Console(), found)
        if not found.ok:
            raise typer.Exit(1)


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
    from rollout_ray.run.submit import (
        config_path,
        exec_submit,
        refuse_secret_overrides,
        shell_line,
        submit_command,
    )

    job = _load(config_path(config, working_dir), overrides)
    refuse_secret_overrides(job)  # here, not on the cluster
    argv = submit_command(str(config), list(overrides or []), address, working_dir, job=job)
    if run:
        exec_submit(argv)
    print(shell_line(argv))


@app.command()
def up(config: ConfigArg = None, overrides: OverridesArg = None) -> None:
    """Keep an engine loaded for this config's model and engine settings: later runs
    with the same settings start at once on it (`rollout-ray down` stops it)."""
    from rollout_ray.logs import quiet_libraries
    from rollout_ray.run import warm

    quiet_libraries()
    job = _load(config, overrides)
    info = warm.up(job, console.print)
    console.print(
        f"warm: {info['model']} on {info['device']} (loaded in {info['start_s']:.1f} s), Ray at "
        f"{info['address']}; `rollout-ray run` with this model and engine settings uses it"
    )


@app.command()
def down() -> None:
    """Stop the warm engines `up` started, and the Ray it started for them."""
    from rollout_ray.run import warm

    stopped = warm.down(console.print)
    console.print(f"stopped {stopped} warm engine{'s' if stopped != 1 else ''}")


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


# The commands that read a finished job's output (inspect, verify, export, export-kinds).
register_result_commands(app)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except SystemExit as done:
        _leave(done.code)
        raise
    except (Exception, KeyboardInterrupt) as exc:  # raised outside a command's body
        try:
            fail(exc)
        except SystemExit as done:
            _leave(done.code)
            raise


def fail(exc: BaseException) -> NoReturn:
    """The one handler: what went wrong as a message, and the exit code it calls for.

    A RolloutRayError is shown as it is: 1 for a job that stopped on a fault of its
    own (storage, engine, an input changed); 2 when it was refused before anything ran
    (a bad config or argument, an output that is another job's, no job where one was
    named). Ctrl-C: 130. Anything else is unexpected: its first line, exit 1, and with
    --debug its traceback.
    """
    if isinstance(exc, KeyboardInterrupt):
        console.print(
            "[yellow]interrupted[/yellow]: committed work is kept; run the same command "
            "again to resume."
        )
        sys.exit(130)
    if isinstance(exc, RolloutRayError):
        console.print(f"[red]error:[/red] {escape(redact(str(exc)))}", soft_wrap=True)
        sys.exit(1 if isinstance(exc, JobFault) else 2)
    if os.environ.get("ROLLOUT_RAY_DEBUG") == "1":
        text = "".join(traceback.format_exception(exc))
        sys.stderr.write(redact(text))
    first = (redact(str(exc)).strip().splitlines() or [""])[0][:500]
    console.print(
        f"[red]error:[/red] rollout-ray stopped on an unexpected error: "
        f"{type(exc).__name__}: {escape(first)}\nCommitted work is kept; run the same command "
        "to resume. `rollout-ray --debug ...` shows the traceback; please report it.",
        soft_wrap=True,
    )
    sys.exit(1)


def _leave(code: object) -> None:
    """Exit at once when this process ran an engine (the local executor) or a job on
    Ray: Python's teardown of torch and vLLM takes seconds and has nothing left to save
    (commits, metrics and the lease are done before run_job returns). Ray is left
    here rather than by its exit hook, which sleeps 0.5 s before it starts."""
    from rollout_ray.run.placement import leave_ray

    if not leave_ray() and "vllm" not in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    main()
