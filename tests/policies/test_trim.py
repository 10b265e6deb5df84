"""trim: the CEL context keeps every key an expression can read, and only those."""

from __future__ import annotations

import cel
import pytest

from scaleguard.policies import trim


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("worker_cert.key_bits >= 2048", frozenset({"key_bits"})),
        ("worker_cert == null ? 'none' : worker_cert.found_in", frozenset({"found_in"})),
        ("null != worker_cert && worker_cert.days_left > 3", frozenset({"days_left"})),
        ("worker_cert != null", frozenset()),
        # anything but a null test needs the whole value
        ("worker_cert == other", None),
        ("size(worker_cert) > 0", None),
        ("worker_cert['found_in'] == null", None),
        ("worker_cert == null_value", None),
        ("f(null) == worker_cert", None),
        # words in string literals and comments are not reads
        ("worker_cert.subject + ' (no worker_cert here)'", frozenset({"subject"})),
        (r"""'it\'s worker_cert' + "worker_cert" + r'\' + worker_cert.serial""", frozenset({"serial"})),
        ("'''worker_cert'''.size() > 0 || worker_cert.expired // or worker_cert", frozenset({"expired"})),
    ],
)
def test_which_keys_an_expression_reads(source: str, expected: frozenset[str] | None) -> None:
    assert trim.access_spec([source])["worker_cert"] == expected


@pytest.mark.parametrize("value", [None, {"found_in": "W\\My", "days_left": 9, "subject": "CN=x"}])
def test_a_null_test_answers_the_same_on_the_trimmed_value(value: dict[str, object] | None) -> None:
    source = "worker_cert == null ? 'none' : worker_cert.found_in"
    spec = trim.access_spec([source, "worker_cert != null"])
    trimmed = trim.trim({"worker_cert": value}, spec)
    assert trimmed["worker_cert"] == (None if value is None else {"found_in": "W\\My"})
    for text in (source, "worker_cert != null", "null == worker_cert"):
        whole = cel.evaluate(text, {"worker_cert": value})
        assert cel.evaluate(text, trimmed) == whole


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("node.root.certificates.size() > 0", "node.root.certificates.size() > 0"),
        ("'see node.root' + node.name", '"" + node.name'),
        ("node.name // node.my is not read", 'node.name ""'),
    ],
)
def test_code_of_leaves_out_what_cannot_name_a_fact(source: str, code: str) -> None:
    assert trim.code_of(source) == code
