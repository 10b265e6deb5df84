"""Command groups shared by the verb modules (each verb lives in its own ``*_cmd`` module)."""

from __future__ import annotations

import typer
from typer.core import TyperArgument, TyperOption

from scaleguard.console import no_color

if no_color():  # typer's help too: no colour, bold or dim under NO_COLOR
    import typer.rich_utils  # only then: typer imports it itself when it renders help or an error

    typer.rich_utils.COLOR_SYSTEM = None

_TYPE_NAMES = {"path": "PATH", "str": "TEXT", "int": "N", "float": "N", "int range": "N", "float range": "N"}


def _help_type(self: TyperOption | TyperArgument, ctx: object) -> str | None:
    """What an option takes, in the words help pages use (PATH, TEXT, N, [a|b]) instead of the Python type
    names typer shows (``<bool>``, ``<list[Path]>``); flags take nothing, so they show nothing."""
    if self.metavar is not None:
        return self.metavar or None
    if isinstance(self, TyperArgument):
        return None  # the argument's name (FILE, DIR) already says what it takes
    if self.is_flag or self.count:
        return None
    label = (self.display_type(ctx) or "").strip("<>")  # type: ignore[arg-type]
    label = label.removeprefix("list[").removesuffix("]")
    if "|" in label:
        return f"[{label}]"
    return _TYPE_NAMES.get(label, _TYPE_NAMES.get(label.lower(), label.upper()))


TyperOption.display_type_rich = _help_type  # type: ignore[method-assign]
TyperArgument.display_type_rich = _help_type  # type: ignore[method-assign, assignment]

app = typer.Typer(
    name="scaleguard",
    help="Audit and repair the certificate setup of SSIS Scale Out clusters.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # WinRM credentials may sit in local variables
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
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
