"""scaleguard.assembled: an assembled model is the model model_construct gives, sharing one fields-set."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from scaleguard.assembled import assemble, can_assemble
from scaleguard.findings.model import Finding, Severity, Status


def _values() -> dict[str, Any]:
    return {
        "policy": "SO-W02", "name": "pin", "title": "t", "cluster": "c", "node": "W1", "scope": "worker",
        "status": Status.FAIL, "severity": Severity.CRITICAL, "message": "m", "evidence": {"a": 1},
        "remediation": None, "references": [], "subject": None, "waiver": None, "applicable": True,
    }


def test_an_assembled_model_equals_the_constructed_one() -> None:
    made = assemble(Finding, _values())
    assert made == Finding.model_construct(**_values())
    assert made.model_dump() == Finding.model_construct(**_values()).model_dump()
    assert made.model_fields_set == set(Finding.model_fields)


def test_instances_share_one_fields_set_that_assignment_and_copies_leave_alone() -> None:
    first, second = assemble(Finding, _values()), assemble(Finding, _values())
    assert first.__pydantic_fields_set__ is second.__pydantic_fields_set__
    first.message = "changed"
    copy = first.model_copy(update={"node": "W2"})
    copy.__pydantic_fields_set__.discard("waiver")
    assert second.model_fields_set == set(Finding.model_fields)
    assert second.message == "m"


def test_models_that_keep_more_than_their_fields_cannot_be_assembled() -> None:
    class Extras(BaseModel):
        model_config = ConfigDict(extra="allow")
        x: int

    class Private(BaseModel):
        x: int
        _cache: int = PrivateAttr(default=0)

    class PostInit(BaseModel):
        x: int

        def model_post_init(self, context: Any) -> None:
            pass

    assert can_assemble(Finding)
    assert not can_assemble(Extras)
    assert not can_assemble(Private)
    assert not can_assemble(PostInit)
