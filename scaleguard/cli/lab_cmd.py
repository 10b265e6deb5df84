"""``scaleguard lab create``: write the example evidence folder (or a big fleet) to audit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scaleguard.console import console as make_console
from scaleguard.exitcodes import ExitCode
from scaleguard.safetext import console_text

from .groups import lab_app


@lab_app.command("create")
def create(
    folder: Annotated[Path, typer.Argument(help="Evidence folder to create (one cluster).")],
    workers: Annotated[int, typer.Option("--workers", min=1, help="Number of workers.")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Repeatable names, addresses, GUIDs and serials.")] = 0,
    fleet: Annotated[
        bool, typer.Option("--fleet", help="Benchmark shape: sparse defects, pooled keys.")
    ] = False,
    healthy: Annotated[bool, typer.Option("--healthy", help="Plant no defects.")] = False,
) -> None:
    """Write a realistic Scale Out evidence folder with real certificates and a few planted defects.

    Example: scaleguard lab create demo/CONTOSO-SSIS
    """
    from scaleguard.lab.scenario import demo_scenario, fleet_scenario  # the generator: only when creating

    console = make_console(soft_wrap=True)  # CI logs: never cut a path in two
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        console.print(f"[bold red]scaleguard lab create: error:[/] {console_text(str(folder))} exists and is not "
                      "an empty folder; choose a new one")
        raise typer.Exit(int(ExitCode.USAGE))
    if fleet:
        scenario = fleet_scenario(workers, seed=seed, defect_every=0 if healthy else 97)
    else:
        scenario = demo_scenario(workers, seed=seed, defects=not healthy)
    scenario.write(folder)
    console.print(f"Wrote {len(scenario.nodes)} nodes of cluster {scenario.cluster} to "
                  f"{console_text(str(folder.resolve()))}")
    for defect in scenario.defects[:10]:
        console.print(f"  planted: {console_text(defect.node)}: {console_text(defect.description)}")
    if len(scenario.defects) > 10:
        console.print(f"  … and {len(scenario.defects) - 10} more (see README.txt)")


@lab_app.command("demo")
def demo(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="New folder for everything the demo writes.")],
    latency_ms: Annotated[
        int, typer.Option("--latency-ms", min=0, help="The lab's network latency per WinRM message.")
    ] = 20,
    exec_ms: Annotated[
        int, typer.Option("--exec-ms", min=0, help="The lab's time to run one agent command.")
    ] = 300,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress of the audits on stderr.")
    ] = True,
) -> None:
    """The whole demo with Python alone: lab create, offline audit, lab over WinRM, live audit, fix, clean audit.

    Each step runs the real commands; the demo fails (exit 1) if the fix leaves anything failing or a second
    fix finds something to do. `make demo` runs this.

    Example: scaleguard lab demo demo
    """
    from scaleguard.lab.demo import DemoFailed, DemoOptions, run_demo

    console = make_console(soft_wrap=True)
    try:
        outputs = run_demo(
            DemoOptions(folder, latency_ms=latency_ms, exec_ms=exec_ms, progress=progress),
            lambda line: console.print(console_text(line)),
        )
    except (DemoFailed, RuntimeError, OSError) as exc:
        console.print(f"[bold red]demo:[/] {console_text(str(exc))}")
        raise typer.Exit(int(ExitCode.FAILING)) from None
    width = max(len(name) for name in outputs) + 1
    for name, path in outputs.items():
        console.print(f"{console_text(name + ':'):<{width}} {console_text(str(path.resolve()))}")
