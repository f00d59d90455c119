"""The JSON Schemas in ``schemas/`` as the tests use them: validators, and the fields their
errors blame, named as ``InvalidMessage.field`` names them (``userIds[1]``, ``payload.type``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from schemas.generate import FOLDER

TARGET = "target"  # the field InvalidMessage names when there is not exactly one target


@cache
def validator(name: str) -> Draft202012Validator:
    """The validator of ``schemas/<name>.schema.json``, as committed."""
    schema = json.loads((FOLDER / f"{name}.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def assert_valid(name: str, instance: Any) -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator(name).iter_errors(instance)
    ]
    assert not errors, f"not a valid {name}: {errors}"


def dotted(path: Iterable[Any]) -> str:
    """A JSON path as ``InvalidMessage`` writes it: ``userIds[1]``, ``payload.type``."""
    name = ""
    for step in path:
        name += f"[{step}]" if isinstance(step, int) else f".{step}" if name else str(step)
    return name


def _under(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def blamed_fields(errors: Iterable[ValidationError]) -> set[str | None]:
    """The fields a schema's errors blame: ``None`` for the envelope as a whole, ``target``
    for the count of targets, an unknown or missing property by its own name."""
    fields: set[str | None] = set()
    for error in errors:
        path = list(error.absolute_path)
        name = dotted(path)
        if error.validator == "additionalProperties":
            known = error.schema.get("properties", {})
            fields.update(_under(name, key) for key in error.instance if key not in known)
        elif error.validator == "required":
            fields.update(
                _under(name, key) for key in error.validator_value if key not in error.instance
            )
        elif error.validator == "oneOf" and not path:
            fields.add(TARGET)
        else:
            fields.add(name or None)
    return fields


def related(field: str | None, blamed: str | None) -> bool:
    """True when two names point at the same field or one lies inside the other
    (``platform[1]`` inside ``platform``)."""
    if field is None or blamed is None:
        return field == blamed
    return any(
        inner == outer or inner.startswith((f"{outer}[", f"{outer}."))
        for inner, outer in ((field, blamed), (blamed, field))
    )
