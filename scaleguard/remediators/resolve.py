"""Intent → the live node's own values, at apply time: settings-file path and service name.

A plan says *which* settings file (the master's or the worker's) and *which* service (the master's or
the worker's); where the file lives and what the service is called with its SQL Server version
(``SSISScaleOutWorker150``) are facts of the node as it is when the plan runs. Plans made from evidence
do not know them for sure, and even a plan made live may be applied after an upgrade, so the executor
calls :func:`resolve` with the fresh collection of the node before each step: it fills in those values,
or refuses the step when the node does not have them (nothing is sent then).
"""

from __future__ import annotations

from scaleguard.remediators.actions import (
    RestartService,
    ServiceParams,
    SetMasterEndpoint,
    SetServiceStartMode,
    StartService,
    WriteConfig,
)
from scaleguard.remediators.describe import CONFIG_FILE
from scaleguard.remediators.model import Step
from scaleguard.snapshot.model import NodeSnapshot

SQL_VERSIONS = ("140", "150", "160")


class ResolveError(ValueError):
    """The live node lacks what the step needs (no settings file of that role, no such service)."""


def config_path_problem(path: str, role: str) -> str | None:
    """Why ``path`` is not ``<drive>:\\...\\Microsoft SQL Server\\<140|150|160>\\DTS\\Binn\\<Role>Settings.config``."""
    parts = path.split("\\")
    if len(parts) < 6 or len(parts[0]) != 2 or not parts[0][0].isalpha() or parts[0][1] != ":":
        return f"{path!r} is not an absolute Windows path"
    if any(part in ("", ".", "..") for part in parts[1:]):
        return f"{path!r} is not a plain path"
    tail = [p.lower() for p in parts[-5:]]
    expected = CONFIG_FILE[role].lower()
    if tail[0] != "microsoft sql server" or tail[1] not in SQL_VERSIONS or tail[2:4] != ["dts", "binn"]:
        return f"{path!r} is not in a Microsoft SQL Server\\<140|150|160>\\DTS\\Binn folder"
    if tail[4] != expected:
        return f"{path!r} is not {CONFIG_FILE[role]}"
    return None


def resolve(step: Step, node: NodeSnapshot | None) -> Step:
    """``step`` with its node-specific values taken from ``node`` (the fresh collection), or ResolveError."""
    params = step.params
    if isinstance(params, WriteConfig | SetMasterEndpoint):
        role = params.config if isinstance(params, WriteConfig) else "worker"
        return step.model_copy(update={"params": params.model_copy(update={"path": _config_path(node, role)})})
    if isinstance(params, SetServiceStartMode | StartService | RestartService):
        return step.model_copy(update={"params": params.model_copy(update={"name": _service_name(node, params)})})
    return step


def _config_path(node: NodeSnapshot | None, role: str) -> str:
    if node is None:
        raise ResolveError(f"the node was not collected, so its {CONFIG_FILE[role]} cannot be found")
    config = node.master_config if role == "master" else node.worker_config
    if config is None or not config.path:
        raise ResolveError(f"the node has no {CONFIG_FILE[role]}")
    problem = config_path_problem(config.path, role)
    if problem is not None:
        raise ResolveError(problem)
    return config.path


def _service_name(node: NodeSnapshot | None, params: ServiceParams) -> str:
    if node is None or node.services is None:
        raise ResolveError("the node's services were not collected, so the Scale Out service cannot be named")
    prefix = f"ssisscaleout{params.role}"
    live = sorted(
        (s.name for s in node.services if s.name.lower().startswith(prefix) and s.name[len(prefix) :].isdigit()),
        key=str.lower,
    )
    if params.name is not None:
        found = next((name for name in live if name.lower() == params.name.lower()), None)
        if found is None:
            raise ResolveError(f"the node has no service {params.name} (it has: {', '.join(live) or 'none'})")
        return found
    if len(live) != 1:
        raise ResolveError(
            f"the node has {len(live) or 'no'} Scale Out {params.role} services"
            + (f" ({', '.join(live)}); the plan must name one" if live else "")
        )
    return live[0]
