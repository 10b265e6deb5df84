"""``scaleguard lab serve``: the evidence folder's nodes as simulated WinRM hosts, until Ctrl-C/SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, cast

import typer

from scaleguard.console import console as make_console
from scaleguard.exitcodes import ExitCode
from scaleguard.lab import DEFAULT_SERVICE_MS
from scaleguard.safetext import console_text

from .groups import lab_app


@lab_app.command("serve")
def serve(
    evidence: Annotated[
        Path, typer.Option("--evidence", help="Evidence folder (one cluster, or a folder of them).")
    ],
    inventory_out: Annotated[
        Path, typer.Option("--inventory-out", help="Where to write the inventory `audit --inventory` uses.")
    ],
    latency_ms: Annotated[int, typer.Option("--latency-ms", min=0, help="Delay of every HTTP exchange.")] = 0,
    exec_ms: Annotated[
        int, typer.Option("--exec-ms", min=0, help="How long each command runs on a host.")
    ] = 0,
    service_ms: Annotated[
        int,
        typer.Option(
            "--service-ms", min=0, help="How long a service takes to start or stop (it reads as pending meanwhile)."
        ),
    ] = DEFAULT_SERVICE_MS,
    https: Annotated[
        bool, typer.Option("--https", help="Serve HTTPS (the lab CA goes next to the inventory).")
    ] = False,
    auth: Annotated[
        str,
        typer.Option(
            "--auth",
            help="basic, ntlm or kerberos (NTLM and Kerberos encrypt messages over HTTP; Kerberos takes its "
            "HTTP/<host> keys from the keytab $KRB5_KTNAME names).",
        ),
    ] = "basic",
    spn_domain: Annotated[
        str,
        typer.Option(
            "--spn-domain",
            help="Kerberos: the inventory names each host's SPN HTTP/<node>.<this domain> (spn_hostname).",
        ),
    ] = "lab.test",
    port_base: Annotated[
        int, typer.Option("--port-base", min=0, max=65000, help="First port (0: any free ports).")
    ] = 0,
    faults: Annotated[
        Path | None, typer.Option("--faults", hidden=True, help="Tests: JSON of per-node injected faults.")
    ] = None,
    host_timeout: Annotated[
        float,
        typer.Option(
            "--host-timeout", hidden=True, min=2, help="Per-host deadline written to the inventory."
        ),
    ] = 120.0,
) -> None:
    """Serve every node of an evidence folder over WinRM on 127.0.0.1 (password: $SCALEGUARD_LAB_PASSWORD).

    Example: scaleguard lab serve --evidence demo/CONTOSO-SSIS --inventory-out demo/lab/inventory.yaml
    """
    from scaleguard.lab.serve import LabError, LabOptions, serve_forever  # the simulator: only when serving

    console = make_console()
    mode = auth.lower()
    try:
        if mode not in ("basic", "ntlm", "kerberos"):
            raise LabError(f"--auth must be basic, ntlm or kerberos, not {auth}")
        options = LabOptions(
            evidence=evidence,
            inventory_out=inventory_out,
            latency_ms=latency_ms,
            exec_ms=exec_ms,
            service_ms=service_ms,
            https=https,
            auth=cast(Literal["basic", "ntlm", "kerberos"], mode),
            spn_domain=spn_domain.strip(".").lower(),
            port_base=port_base,
            faults=faults,
            timeout_s=host_timeout,
        )
        code = serve_forever(options, announce=lambda text: console.print(console_text(text)))
    except LabError as exc:
        console.print(f"[bold red]scaleguard lab serve: error:[/] {console_text(str(exc))}")
        raise typer.Exit(int(ExitCode.USAGE)) from None
    raise typer.Exit(code)
