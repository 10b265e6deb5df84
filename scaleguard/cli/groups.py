"""Command groups shared by the verb modules (each verb lives in its own ``*_cmd`` module)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="scaleguard",
    help="Audit and repair the certificate setup of SSIS Scale Out clusters.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # WinRM credentials may sit in local variables
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"scaleguard {version('scaleguard')}")
        except PackageNotFoundError:  # running from a checkout that was never installed
            typer.echo("scaleguard (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Audit and repair the certificate setup of SSIS Scale Out clusters."""


lab_app = typer.Typer(help="The built-in example lab: evidence folders and a WinRM simulator.", no_args_is_help=True)
policies_app = typer.Typer(help="List and validate policy packs.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")
app.add_typer(policies_app, name="policies")
