"""Pydantic models put together from values that are already right, for the two places that make tens of
thousands of them per large audit: findings (``policies.engine``) and per-store certificate copies
(``collectors.parsers.certs``).

:func:`assemble` does what ``model_construct`` / ``__copy__`` end with — a new instance given its
``__dict__`` — without their generic per-field work (alias lookups, defaults, ``copy.copy`` dispatch),
which cost as much as judging the findings. The caller vouches that ``fields`` holds every field, in
order, each of its declared type.

Every instance a model gets this way shares one fields-set naming every field. That is safe because
pydantic only ever adds a field name to it (on assignment) and each name is in it already, and
``model_copy`` gives a copy its own; nothing in scaleguard dumps with ``exclude_unset``. One set per
model instead of one per instance: 10 MiB less per 14,000 findings, 12 MiB less per 16,001 certificate
copies, and a forked helper's pickled batch carries it once instead of once per object.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

_M = TypeVar("_M", bound=BaseModel)
_set = object.__setattr__
_every_field: dict[type[BaseModel], set[str]] = {}


def can_assemble(model: type[BaseModel]) -> bool:
    """Whether :func:`assemble` gives the same model ``model_construct`` would: no extras kept, no
    private attributes, no post-init hook."""
    return (
        model.model_config.get("extra") != "allow"
        and not model.__private_attributes__
        and not model.__pydantic_post_init__
    )


def assemble(model: type[_M], fields: dict[str, Any]) -> _M:
    """An instance of ``model`` whose ``__dict__`` is ``fields`` (taken as is, not copied)."""
    every = _every_field.get(model)
    if every is None:
        every = _every_field[model] = set(model.model_fields)
    instance = model.__new__(model)
    _set(instance, "__dict__", fields)
    _set(instance, "__pydantic_fields_set__", every)
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance
