"""The loader refuses every kind of broken policy file with ``file:line: reason``, and loads good ones."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from scaleguard.policies.loader import (
    PolicyError,
    builtin_policies,
    load_all,
    load_directory,
    load_policies,
    parse_policy_text,
)
from scaleguard.policies.model import REMEDIATIONS, Scope

GOOD = textwrap.dedent(
    """\
    id: XX-W01
    name: worker-not-local-system
    title: The worker service does not run as LocalSystem
    severity: low
    scope: worker
    description: A virtual account limits what a package can do to the node.
    references: [https://example.invalid/hardening]
    requires:
      - worker.service
    check: >-
      worker.service.account == null
      || lower(worker.service.account) != 'localsystem'
    let:
      host: node.name
      account: worker.service.account
    message: '{host} runs the worker service as {account}'
    remediation: manual
    """
)


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    folder = tmp_path / "pack"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def problems_of(tmp_path: Path, text: str) -> list[PolicyError]:
    folder = write(tmp_path, text)
    return load_all([folder]).problems


def replace_line(text: str, prefix: str, new: str) -> str:
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    lines[index] = new
    return "\n".join(lines) + "\n"


def assert_single(problems: list[PolicyError], path: Path, line: int, *fragments: str) -> None:
    assert len(problems) == 1, [str(p) for p in problems]
    text = str(problems[0])
    assert text.startswith(f"{path}:{line}: "), text
    for fragment in fragments:
        assert fragment in text, text


def test_builtin_pack_is_the_design_table() -> None:
    ids = [p.id for p in builtin_policies()]
    expected = (
        [f"SO-C{i:02d}" for i in range(1, 4)]
        + [f"SO-M{i:02d}" for i in range(1, 12)]
        + [f"SO-W{i:02d}" for i in range(1, 14)]
    )
    assert ids == expected
    for policy in builtin_policies():
        assert policy.remediation in REMEDIATIONS
        assert policy.references, policy.id
        assert policy.source == f"builtin:pack/{policy.id}.yaml"


def test_good_user_policy_loads_with_the_builtin_pack(tmp_path: Path) -> None:
    policies = load_policies([write(tmp_path, GOOD)])
    assert len(policies) == 28
    user = next(p for p in policies if p.id == "XX-W01")
    assert user.scope is Scope.WORKER
    assert user.source.endswith("policy.yaml")
    assert user.summary()["id"] == "XX-W01"
    assert user.summary()["requires"] == ["worker.service"]


def test_yaml_syntax_error_has_the_line_of_the_mark(tmp_path: Path) -> None:
    text = GOOD.replace("title: The worker", "title: [The worker")
    path = write(tmp_path, text) / "policy.yaml"
    assert_single(problems_of(tmp_path, text), path, 4, "YAML syntax error")


def test_unknown_field_points_at_its_key(tmp_path: Path) -> None:
    text = GOOD + "requries: [node.worker]\n"
    path = tmp_path / "pack" / "policy.yaml"
    assert_single(problems_of(tmp_path, text), path, 18, "unknown field 'requries'")


def test_missing_field_points_at_the_document(tmp_path: Path) -> None:
    text = replace_line(GOOD, "remediation:", "")
    assert_single(problems_of(tmp_path, text), tmp_path / "pack" / "policy.yaml", 1, "missing field 'remediation'")


@pytest.mark.parametrize(
    ("prefix", "new", "line", "fragment"),
    [
        ("id:", "id: so-m5", 1, "does not match"),
        ("name:", "name: Worker_Not_Local", 2, "not kebab-case"),
        ("severity:", "severity: urgent", 4, "severity"),
        ("scope:", "scope: node", 5, "scope"),
        (
            "remediation:",
            "remediation: reboot-everything",
            17,
            "remediation 'reboot-everything' is not one of",
        ),
    ],
)
def test_bad_values_point_at_their_line(tmp_path: Path, prefix: str, new: str, line: int, fragment: str) -> None:
    text = replace_line(GOOD, prefix, new)
    assert_single(problems_of(tmp_path, text), tmp_path / "pack" / "policy.yaml", line, fragment)


def test_cel_syntax_error_points_inside_the_block_scalar(tmp_path: Path) -> None:
    text = GOOD.replace("|| lower(worker.service.account) != 'localsystem'", "|| lower(worker.service.account) !=")
    problems = problems_of(tmp_path, text)
    assert_single(problems, tmp_path / "pack" / "policy.yaml", 11, "check: CEL does not compile", "Syntax error")


def test_cel_error_on_a_plain_scalar(tmp_path: Path) -> None:
    text = GOOD.replace("  host: node.name", "  host: node.name +")
    assert_single(problems_of(tmp_path, text), tmp_path / "pack" / "policy.yaml", 14, "let.host: CEL does not compile")


def test_unknown_function_and_variable(tmp_path: Path) -> None:
    text = GOOD.replace("  host: node.name", "  host: upper(nod.name)")
    problems = problems_of(tmp_path, text)
    assert len(problems) == 2, [str(p) for p in problems]
    assert all(str(p).startswith(f"{tmp_path / 'pack' / 'policy.yaml'}:14: ") for p in problems)
    assert "unknown CEL function(s) upper" in str(problems[0])
    assert "unknown variable(s) nod" in str(problems[1])


def test_macro_variables_are_not_unknown(tmp_path: Path) -> None:
    text = GOOD.replace("  host: node.name", "  host: node.diagnostics.filter(d, d.level == 'error').map(x, x.source)")
    assert problems_of(tmp_path, text) == []


def test_unknown_fact_path_in_requires(tmp_path: Path) -> None:
    text = GOOD.replace("  - worker.service\n", "  - worker.service\n  - worker.servcie.account\n")
    assert_single(
        problems_of(tmp_path, text),
        tmp_path / "pack" / "policy.yaml",
        10,
        "unknown fact path 'worker.servcie.account'",
    )


def test_requires_must_be_a_dotted_path(tmp_path: Path) -> None:
    text = GOOD.replace("  - worker.service\n", "  - worker.service != null\n")
    assert_single(problems_of(tmp_path, text), tmp_path / "pack" / "policy.yaml", 9, "not a dotted fact path")


def test_message_may_only_use_let_names(tmp_path: Path) -> None:
    text = GOOD.replace("message: '{host} runs", "message: '{node} runs")
    assert_single(
        problems_of(tmp_path, text),
        tmp_path / "pack" / "policy.yaml",
        16,
        "placeholder {node} is not allowed here",
    )


def test_message_with_a_format_spec_or_a_stray_brace(tmp_path: Path) -> None:
    spec = GOOD.replace("message: '{host} runs", "message: '{host!r} runs")
    assert "must not carry a format spec" in str(problems_of(tmp_path, spec)[0])
    brace = GOOD.replace("message: '{host} runs", "message: '{host} } runs")
    assert "bad template" in str(problems_of(tmp_path, brace)[0])


def test_duplicate_key(tmp_path: Path) -> None:
    text = GOOD + "severity: high\n"
    problems = problems_of(tmp_path, text)
    assert any(str(p).startswith(f"{tmp_path / 'pack' / 'policy.yaml'}:18: duplicate key 'severity'") for p in problems)


def test_for_each_only_for_cluster_scope_and_item_only_with_for_each(tmp_path: Path) -> None:
    text = GOOD + "for_each: cluster.nodes\n"
    assert "for_each is only for scope: cluster" in str(problems_of(tmp_path, text)[0])
    text = GOOD.replace("  host: node.name", "  host: item.name")
    assert_single(problems_of(tmp_path, text), tmp_path / "pack" / "policy.yaml", 14, "`item` is only bound")


def test_cluster_scope_has_no_node(tmp_path: Path) -> None:
    text = replace_line(GOOD, "scope:", "scope: cluster")
    problems = problems_of(tmp_path, text)
    assert problems, "a cluster policy reading node must be refused"
    assert all("cluster-scope policies have no" in str(p) for p in problems)


def test_an_id_of_the_builtin_pack_needs_override(tmp_path: Path) -> None:
    text = replace_line(GOOD, "id:", "id: SO-W13")
    assert_single(
        problems_of(tmp_path, text),
        tmp_path / "pack" / "policy.yaml",
        1,
        "id SO-W13 is already defined by builtin:pack/SO-W13.yaml",
        "override: true",
    )
    overriding = replace_line(text, "name:", "name: worker-no-stale-certs") + "override: true\n"
    policies = load_policies([write(tmp_path, overriding)])
    replaced = next(p for p in policies if p.id == "SO-W13")
    assert replaced.source.endswith("policy.yaml")
    assert [p.id for p in policies].count("SO-W13") == 1


def test_override_of_nothing_and_duplicates_across_files(tmp_path: Path) -> None:
    text = GOOD + "override: true\n"
    assert "override: true, but no policy XX-W01 exists" in str(problems_of(tmp_path, text)[0])
    folder = write(tmp_path / "two", GOOD, "a.yaml")
    write(tmp_path / "two", replace_line(GOOD, "name:", "name: another-name"), "b.yaml")
    problems = load_all([folder]).problems
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"{folder / 'b.yaml'}:1: id XX-W01 is already defined in ")


def test_several_documents_in_one_file_keep_their_lines() -> None:
    second = replace_line(replace_line(GOOD, "id:", "id: XX-W02"), "name:", "name: second-one")
    second = second.replace("  - worker.service\n", "  - worker.nothing\n")
    assert len(GOOD.splitlines()) == 17  # so the second document starts on line 19, its requires on 27
    parsed = parse_policy_text(GOOD + "---\n" + second, "multi.yaml")
    assert [p.id for p, _line in parsed.with_lines] == ["XX-W01"]
    assert [str(p) for p in parsed.problems] == [
        "multi.yaml:27: requires: unknown fact path 'worker.nothing' (see `scaleguard policies facts`)"
    ]


def test_not_a_mapping_and_empty_file() -> None:
    assert "must be a mapping" in str(parse_policy_text("- just\n- a list\n", "x.yaml").problems[0])
    assert str(parse_policy_text("", "empty.yaml").problems[0]) == "empty.yaml:1: empty policy file"


def test_directories_that_cannot_be_packs(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert str(load_directory(missing).problems[0]) == f"{missing}: not a directory of policy files"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no policy files" in str(load_directory(empty).problems[0])
    with pytest.raises(PolicyError) as raised:
        load_policies([missing])
    assert raised.value.path == str(missing) and raised.value.line is None


def test_yaml_literals_are_cel_literals(tmp_path: Path) -> None:
    text = replace_line(GOOD, "  account:", "  answer: 42")
    text = text.replace(
        "check: >-\n  worker.service.account == null\n  || lower(worker.service.account) != 'localsystem'\n",
        "check: true\n",
    )
    text = text.replace("as {account}", "as {answer}")
    policy = next(p for p in load_policies([write(tmp_path, text)]) if p.id == "XX-W01")
    assert (policy.check, policy.let["answer"]) == ("true", "42")


def test_not_applicable_needs_applies_if(tmp_path: Path) -> None:
    text = GOOD + "not_applicable: never mind\n"
    assert_single(
        problems_of(tmp_path, text),
        tmp_path / "pack" / "policy.yaml",
        1,
        "not_applicable is only meaningful with applies_if",
    )
