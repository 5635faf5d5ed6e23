"""Input problems as one line each, in the words of backlog import (`card X: field: message`)."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator, Sequence
from typing import Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from squad.core.safetext import excerpt

_INTEGER = re.compile(r"^[+-]?\d+$")


def request_problems(errors: Sequence[Any], body: Any) -> list[str]:
    """FastAPI/pydantic validation errors as lines naming the card when the body has an id."""
    raw = body.get("card_id") if isinstance(body, dict) else None
    ident = excerpt(raw) if isinstance(raw, str) else None
    lines: list[str] = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "request"
        field = ".".join(loc[1:]) or where
        msg = "unknown field" if err.get("type") == "extra_forbidden" else str(err.get("msg", "invalid"))
        if where == "body" and ident is not None:
            lines.append(f"card {ident}: {field}: {msg}")
        elif where == "body":
            lines.append(f"body: {field}: {msg}" if field != "body" else f"body: {msg}")
        else:
            lines.append(f"{where} {field}: {msg}" if field != where else f"{where}: {msg}")
    return lines


def _scalar_kind(annotation: Any) -> str | None:
    """'int' or 'scalar' for a query parameter's type, None for a list (which may repeat)."""
    args = [a for a in get_args(annotation) if a is not type(None)] \
        if get_origin(annotation) in (Union, types.UnionType) else [annotation]
    if any(get_origin(a) in (list, tuple, set, frozenset) or a in (list, tuple, set, frozenset) for a in args):
        return None
    return "int" if args == [int] else "scalar"


def _walk(dependant: Any) -> Iterator[Any]:
    yield from dependant.query_params
    for sub in dependant.dependencies:
        yield from _walk(sub)


def _query_kinds(dependant: Any) -> Iterator[tuple[str, str]]:
    for field in _walk(dependant):
        kind = _scalar_kind(field.field_info.annotation)
        if kind is not None:
            yield field.alias, kind


def strict_query(request: Request) -> None:
    """Refuse (422) a single-valued query parameter given twice and an integer written otherwise
    ("1.0"): FastAPI would silently keep the last value, and pydantic read "1.0" as 1."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None or not request.query_params:
        return
    errors: list[dict[str, Any]] = []
    for alias, kind in _query_kinds(dependant):
        values = request.query_params.getlist(alias)
        if len(values) > 1:
            errors.append({"loc": ("query", alias), "msg": "given more than once", "type": "value_error"})
        elif kind == "int" and values and not _INTEGER.match(values[0]):
            errors.append({"loc": ("query", alias), "msg": "Input should be a valid integer", "type": "int_parsing"})
    if errors:
        raise RequestValidationError(errors)
