"""Load policy packs: the built-in SSIS Scale Out pack, then the user's, all validated before any audit.

A policy file that is wrong must stop the audit with ``file:line: reason`` (exit 2), never be skipped:
a skipped policy is a check the user believes ran. So everything that can be checked without a snapshot
is checked here — YAML syntax, unknown or missing keys, id/name shapes, severities and scopes, every CEL
expression compiled (with the line of the error inside the file), functions and variables it uses, the
fact paths in ``requires``, message placeholders, duplicate ids — and evaluation only runs clean policies.

User packs may not silently shadow a built-in policy: reusing an id is an error unless the user policy
says ``override: true`` (then it replaces the built-in one, and ``policies list`` shows where it came from).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import cel
import yaml
from pydantic import ValidationError

from scaleguard.policies import fact_schema
from scaleguard.policies.functions import BUILTIN_FUNCTIONS, FUNCTIONS
from scaleguard.policies.model import Policy, Programs, Scope
from scaleguard.safefile import MIB, read_limited

VARIABLES = (
    "now",
    "thresholds",
    "cluster",
    "masters",
    "node",
    "master",
    "worker",
    "master_cert",
    "worker_cert",
    "item",
)
NODE_VARIABLES = ("node", "master", "worker", "master_cert", "worker_cert")
BUILTIN_PREFIX = "builtin:"
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_CEL_POSITION = re.compile(r"<input>:(\d+):(\d+)")
_FACT_PATH = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")


class PolicyError(Exception):
    """One problem in one policy file; ``str()`` is the ``file:line: reason`` the CLI prints."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass
class LoadResult:
    policies: list[Policy]
    problems: list[PolicyError]


def load_policies(extra_dirs: list[Path]) -> list[Policy]:
    """The built-in pack plus every policy in ``extra_dirs``; raises the first :class:`PolicyError`."""
    result = load_all(extra_dirs)
    if result.problems:
        raise result.problems[0]
    return result.policies


def load_all(extra_dirs: Iterable[Path]) -> LoadResult:
    """Like :func:`load_policies` but collects every problem (``policies validate`` prints them all)."""
    builtin = builtin_policies()
    problems: list[PolicyError] = []
    by_id: dict[str, Policy] = {p.id: p for p in builtin}
    user_ids: dict[str, Policy] = {}
    for directory in extra_dirs:
        if is_builtin_pack(directory):
            continue  # already loaded above: validating the shipped pack itself must not clash with it
        loaded = load_directory(directory)
        problems.extend(loaded.problems)
        for policy, line in loaded.with_lines:
            clash = user_ids.get(policy.id)
            if clash is not None:
                problems.append(
                    PolicyError(policy.source, line, f"id {policy.id} is already defined in {clash.source}")
                )
                continue
            existing = by_id.get(policy.id)
            if existing is not None and not policy.override:
                problems.append(
                    PolicyError(
                        policy.source,
                        line,
                        f"id {policy.id} is already defined by {existing.source}; "
                        "set `override: true` to replace it",
                    )
                )
                continue
            if existing is None and policy.override:
                problems.append(
                    PolicyError(policy.source, line, f"override: true, but no policy {policy.id} exists")
                )
                continue
            user_ids[policy.id] = policy
            by_id[policy.id] = policy
    names: dict[str, Policy] = {}
    for policy in by_id.values():
        other = names.setdefault(policy.name, policy)
        if other is not policy:
            problems.append(
                PolicyError(policy.source, None, f"name {policy.name} is also used by {other.id}")
            )
    return LoadResult(policies=sorted(by_id.values(), key=_order), problems=problems)


def is_builtin_pack(directory: Path) -> bool:
    """Whether ``directory`` is the pack shipped in the package (so it is not loaded a second time)."""
    pack = Path(str(resources.files("scaleguard.policies").joinpath("pack")))
    try:
        return directory.resolve() == pack.resolve()
    except OSError:
        return False


POLICY_FILE_LIMIT = 4 * MIB
"""A policy file is a few KiB of YAML; a larger one is refused unread."""


@lru_cache(maxsize=1)
def _builtin() -> tuple[tuple[Policy, ...], tuple[PolicyError, ...]]:
    policies: list[Policy] = []
    problems: list[PolicyError] = []
    pack = resources.files("scaleguard.policies").joinpath("pack")
    for entry in sorted(pack.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            parsed = parse_policy_text(
                entry.read_text(encoding="utf-8"), f"{BUILTIN_PREFIX}pack/{entry.name}"
            )
            policies.extend(p for p, _line in parsed.with_lines)
            problems.extend(parsed.problems)
    return tuple(policies), tuple(problems)


def builtin_policies() -> list[Policy]:
    """The pack shipped in the package; a broken built-in policy is a bug, so it raises."""
    policies, problems = _builtin()
    if problems:
        raise problems[0]
    return list(policies)


@dataclass
class ParsedFile:
    with_lines: list[tuple[Policy, int]]
    problems: list[PolicyError]


def load_directory(directory: Path) -> ParsedFile:
    if not directory.is_dir():
        return ParsedFile([], [PolicyError(directory, None, "not a directory of policy files")])
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in (".yaml", ".yml"))
    if not files:
        return ParsedFile(
            [], [PolicyError(directory, None, "no policy files (*.yaml, *.yml) in this directory")]
        )
    out = ParsedFile([], [])
    for path in files:
        try:
            text = read_limited(path, POLICY_FILE_LIMIT).decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            out.problems.append(PolicyError(path, None, f"cannot read: {exc}"))
            continue
        parsed = parse_policy_text(text, str(path))
        out.with_lines.extend(parsed.with_lines)
        out.problems.extend(parsed.problems)
    return out


def parse_policy_text(text: str, source: str) -> ParsedFile:
    """Every policy document in ``text``; problems carry ``source`` and the line they are on."""
    out = ParsedFile([], [])
    try:
        documents = list(_documents(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        out.problems.append(PolicyError(source, line, f"YAML syntax error: {problem}"))
        return out
    if not documents:
        out.problems.append(PolicyError(source, 1, "empty policy file"))
    for node, data in documents:
        doc = _Document(source, node)
        policy = doc.build(data)
        out.problems.extend(doc.problems)
        if policy is not None:
            out.with_lines.append((policy, doc.key_line("id")))
    return out


_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader where PyYAML was built with it: the same safe subset and the same node marks (the
lines of error messages), and much faster than the pure-Python one."""


def _documents(text: str) -> Iterator[tuple[yaml.Node, Any]]:
    loader = _SAFE_LOADER(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            yield node, loader.construct_document(node)
    finally:
        loader.dispose()


class _Document:
    """One YAML document being turned into a Policy, remembering where each key sits in the file."""

    def __init__(self, source: str, node: yaml.Node) -> None:
        self.source = source
        self.node = node
        self.problems: list[PolicyError] = []

    @property
    def start(self) -> int:
        return int(self.node.start_mark.line) + 1

    def fail(self, line: int | None, reason: str) -> None:
        self.problems.append(PolicyError(self.source, line, reason))

    def build(self, data: Any) -> Policy | None:
        if not isinstance(self.node, yaml.MappingNode) or not isinstance(data, dict):
            self.fail(self.start, "a policy must be a mapping of keys (id, name, title, ...)")
            return None
        self._duplicate_keys()
        if "source" in data:  # not an authoring key: the loader records where a policy came from
            self.fail(self.key_line("source"), "unknown field 'source'")
        try:
            policy = Policy.model_validate({**data, "source": self.source})
        except ValidationError as exc:
            for err in exc.errors():
                self._pydantic_problem(err)
            return None
        programs = self._compile(policy)
        self._check_requires(policy)
        self._check_templates(policy)
        if self.problems or programs is None:
            return None
        policy.attach(programs)
        return policy

    # -------------------------------------------------------------------------------- locations

    def key_line(self, *loc: Any) -> int:
        """The line of the key at ``loc`` itself (the value may start lines below it)."""
        parent = self._value_node(loc[:-1])
        if isinstance(parent, yaml.MappingNode):
            for key, _value in parent.value:
                if key.value == str(loc[-1]):
                    return int(key.start_mark.line) + 1
        return self._line_of(loc)

    def _value_node(self, loc: tuple[Any, ...]) -> yaml.Node | None:
        node: yaml.Node | None = self.node
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == str(part)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
            else:
                return node
        return node

    def _line_of(self, loc: tuple[Any, ...]) -> int:
        node = self._value_node(loc)
        return int(node.start_mark.line) + 1 if node is not None else self.start

    def _duplicate_keys(self) -> None:
        assert isinstance(self.node, yaml.MappingNode)
        seen: set[str] = set()
        for key, _value in self.node.value:
            if key.value in seen:
                self.fail(int(key.start_mark.line) + 1, f"duplicate key '{key.value}'")
            seen.add(key.value)

    def _pydantic_problem(self, err: Any) -> None:
        loc = tuple(err.get("loc", ()))
        kind = err.get("type", "")
        field = ".".join(str(p) for p in loc)
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            self.fail(self.key_line(*loc), f"unknown field '{field}'")
        elif kind == "missing":
            self.fail(self._line_of(loc[:-1]), f"missing field '{field}'")
        elif not loc:
            self.fail(self.start, message)
        else:
            self.fail(self._line_of(loc), f"{field}: {message}")

    # -------------------------------------------------------------------------------- CEL

    def _compile(self, policy: Policy) -> Programs | None:
        ok = True
        read = {path.split(".", 1)[0] for path in policy.requires}

        def compiled(loc: tuple[Any, ...], expr: str) -> Any:
            nonlocal ok
            program = self._compile_one(policy, loc, expr)
            if program is None:
                ok = False
            else:
                read.update(program.variables())
            return program

        programs = Programs(check=compiled(("check",), policy.check))
        if policy.for_each is not None:
            programs.for_each = compiled(("for_each",), policy.for_each)
        if policy.applies_if is not None:
            programs.applies_if = compiled(("applies_if",), policy.applies_if)
        if policy.subject is not None:
            programs.subject = compiled(("subject",), policy.subject)
        programs.grades = [
            (compiled(("grades", i, "when"), g.when), g.severity) for i, g in enumerate(policy.grades)
        ]
        programs.let = {name: compiled(("let", name), expr) for name, expr in policy.let.items()}
        if not ok:
            return None
        programs.uses = frozenset(read & set(VARIABLES)) | {"item"}
        return programs

    def _compile_one(self, policy: Policy, loc: tuple[Any, ...], expr: str) -> Any:
        field = ".".join(str(p) for p in loc)
        try:
            program = cel.compile(expr)
        except (ValueError, RuntimeError) as exc:
            text = str(exc)
            self.fail(self._cel_line(loc, text), f"{field}: CEL does not compile: {_cel_reason(text)}")
            return None
        line = self._line_of(loc)
        unknown_functions = [
            f
            for f in program.functions()
            if f[:1].isalpha() and f not in BUILTIN_FUNCTIONS and f not in FUNCTIONS
        ]
        if unknown_functions:
            self.fail(line, f"{field}: unknown CEL function(s) {', '.join(sorted(unknown_functions))}")
        bound = set(_MACRO_VARIABLE.findall(expr))
        unknown_vars = [v for v in program.variables() if v not in VARIABLES and v not in bound]
        if unknown_vars:
            self.fail(
                line,
                f"{field}: unknown variable(s) {', '.join(sorted(unknown_vars))} "
                f"(policies see {', '.join(VARIABLES)})",
            )
        uses = set(program.variables())
        if "item" in uses and policy.for_each is None:
            self.fail(line, f"{field}: `item` is only bound for policies with for_each")
        node_vars = sorted(uses & set(NODE_VARIABLES))
        if node_vars and policy.scope is Scope.CLUSTER:
            self.fail(
                line,
                f"{field}: cluster-scope policies have no `{'`, `'.join(node_vars)}`; "
                "use `cluster`, `masters` or `item`",
            )
        return program

    def _cel_line(self, loc: tuple[Any, ...], message: str) -> int:
        node = self._value_node(loc)
        if node is None:
            return self.start
        base = int(node.start_mark.line) + 1
        if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
            base += 1  # the expression starts on the line after the block indicator
        match = _CEL_POSITION.search(message)
        return base + (int(match.group(1)) - 1 if match else 0)

    # -------------------------------------------------------------------------------- the rest

    def _check_requires(self, policy: Policy) -> None:
        for i, path in enumerate(policy.requires):
            line = self._line_of(("requires", i))
            if not _FACT_PATH.match(path):
                self.fail(line, f"requires: {path!r} is not a dotted fact path")
                continue
            head = path.split(".", 1)[0]
            if head == "item":
                if policy.for_each is None:
                    self.fail(line, f"requires: {path} names `item`, but the policy has no for_each")
                continue
            if head in NODE_VARIABLES and policy.scope is Scope.CLUSTER:
                self.fail(line, f"requires: {path}: cluster-scope policies have no `{head}`")
            elif fact_schema.lookup(path) is None:
                self.fail(line, f"requires: unknown fact path {path!r} (see `scaleguard policies facts`)")

    def _check_templates(self, policy: Policy) -> None:
        for key, template, allowed in (
            ("message", policy.message, set(policy.let)),
            ("pass_message", policy.pass_message, set(policy.let)),
            ("not_applicable", policy.not_applicable, set()),
        ):
            if template is None:
                continue
            line = self._line_of((key,))
            try:
                fields = list(string.Formatter().parse(template))
            except ValueError as exc:
                self.fail(line, f"{key}: bad template ({exc}); write literal braces as {{{{ and }}}}")
                continue
            for _text, name, spec, conversion in fields:
                if name is None:
                    continue
                if name not in allowed:
                    where = (
                        "a name from `let`" if allowed else "no placeholders (let values are not computed)"
                    )
                    self.fail(line, f"{key}: placeholder {{{name}}} is not allowed here; use {where}")
                elif spec or conversion:
                    self.fail(
                        line, f"{key}: placeholder {{{name}}} must not carry a format spec or conversion"
                    )


def _cel_reason(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "invalid expression"
    match = re.search(r"ERROR: <input>:\d+:\d+: (.*)", message)
    return match.group(1).strip() if match else first


def _order(policy: Policy) -> tuple[int, str]:
    return ({"cluster": 0, "master": 1, "worker": 2}[policy.scope.value], policy.id)
