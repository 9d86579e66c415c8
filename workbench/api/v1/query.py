"""Pagination, filtering, sorting and field selection for every ``/api/v1`` list route.

    GET /api/v1/tasks?page=2&limit=10&status=running&sort=createdAt:desc&fields=id,status

One implementation over plain dicts (the routes' views): a ``ListSpec`` says which fields a
resource has, which of them filter and sort; ``paginate`` validates the query against it and
returns the page plus ``meta.pagination {total, page, limit, pages}``. Unknown filters, sort keys
and fields are ``VALIDATION_ERROR``s naming the offending parameter. Sort keys may be given in
camelCase (``createdAt``) as in the conventions, or as the snake_case field names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from .conventions import validation_error

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
COMMON_PARAMS = frozenset({"page", "limit", "sort", "fields"})


def snake(name: str) -> str:
    """``createdAt`` -> ``created_at``."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


@dataclass(frozen=True)
class ListSpec:
    """What a list resource offers. ``filters`` maps a query parameter to a function that
    turns its value into a predicate over an item (raising ``ApiError`` for a bad value)."""

    fields: tuple[str, ...]
    sortable: tuple[str, ...]
    filters: Mapping[str, Callable[[str], Callable[[dict[str, Any]], bool]]] = field(
        default_factory=dict)
    default_sort: tuple[str, bool] = ("created_at", True)  # (field, descending)


@dataclass(frozen=True)
class ListQuery:
    page: int
    limit: int
    sort: str | None
    fields: str | None
    params: Mapping[str, str]  # every query parameter, for filters


def list_query_dependency(default_limit: int = DEFAULT_LIMIT) -> Callable[..., ListQuery]:
    """The query dependency of a list route whose ``limit`` defaults to ``default_limit`` (the
    conventions say 20; the neurogrid node list says 50)."""

    def list_query(
        request: Request,
        page: Annotated[int, Query(ge=1, le=1_000_000, description="page number, from 1")] = 1,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"items per page (max "
                                    f"{MAX_LIMIT})")] = default_limit,
        sort: Annotated[str | None, Query(max_length=100, description="field:asc|desc, e.g. "
                                          "createdAt:desc")] = None,
        fields: Annotated[str | None, Query(max_length=500, description="comma-separated "
                                            "fields to return, e.g. id,status")] = None,
    ) -> ListQuery:
        return ListQuery(page, limit, sort, fields, dict(request.query_params))

    return list_query


ListQueryDep = Annotated[ListQuery, Depends(list_query_dependency())]


def _parse_sort(text: str | None, spec: ListSpec) -> tuple[str, bool]:
    if not text:
        return spec.default_sort
    key, _, direction = text.partition(":")
    name = snake(key.strip())
    direction = (direction or "asc").strip().lower()
    if name not in spec.sortable:
        raise validation_error("sort", f"cannot sort by {key!r}; sortable: "
                               f"{', '.join(spec.sortable)}", value=text)
    if direction not in ("asc", "desc"):
        raise validation_error("sort", f"direction must be 'asc' or 'desc', got {direction!r}",
                               value=text)
    return name, direction == "desc"


def _parse_fields(text: str | None, spec: ListSpec) -> dict[str, str] | None:
    """``{requested name: field}``: ``fields=id,createdAt`` answers the keys ``id`` and
    ``createdAt`` (as asked), holding the ``id`` and ``created_at`` values."""
    if text is None:
        return None
    wanted = [f.strip() for f in text.split(",") if f.strip()]
    if not wanted:
        raise validation_error("fields", "give at least one field name")
    unknown = [f for f in wanted if snake(f) not in spec.fields]
    if unknown:
        raise validation_error("fields", f"unknown field(s) {', '.join(unknown)}; known: "
                               f"{', '.join(spec.fields)}", value=text)
    return {name: snake(name) for name in wanted}


def _sort_key(name: str) -> Callable[[dict[str, Any]], tuple]:
    # None sorts first ascending (last descending); mixed types compare by their text.
    def key(item: dict[str, Any]) -> tuple:
        value = item.get(name)
        if value is None:
            return (0, "")
        return (1, value) if isinstance(value, (int, float, str)) else (1, str(value))

    return key


def select(item: dict[str, Any], fields: Mapping[str, str] | None) -> dict[str, Any]:
    return item if fields is None else {name: item.get(f) for name, f in fields.items()}


def paginate(items: Iterable[dict[str, Any]], query: ListQuery, spec: ListSpec,
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the requested page of ``items``, ``meta``). Validates every query parameter."""
    unknown = [p for p in query.params if p not in COMMON_PARAMS and p not in spec.filters]
    if unknown:
        allowed = sorted(COMMON_PARAMS | set(spec.filters))
        raise validation_error(unknown[0], f"unknown query parameter; allowed: "
                               f"{', '.join(allowed)}")
    predicates = [make(query.params[name]) for name, make in spec.filters.items()
                  if name in query.params]
    sort_field, descending = _parse_sort(query.sort, spec)
    fields = _parse_fields(query.fields, spec)

    kept = [item for item in items if all(p(item) for p in predicates)]
    kept.sort(key=_sort_key(sort_field), reverse=descending)
    total = len(kept)
    start = (query.page - 1) * query.limit
    page = [select(item, fields) for item in kept[start:start + query.limit]]
    pages = math.ceil(total / query.limit) if total else 0
    meta = {"pagination": {"total": total, "page": query.page, "limit": query.limit,
                           "pages": pages}}
    return page, meta


def equals(field_name: str, *, param: str | None = None,
           aliases: Mapping[str, Iterable[str]] | None = None,
           allowed: Iterable[str] | None = None) -> Callable[[str], Callable[[dict], bool]]:
    """A filter ``param=value`` matching ``item[field_name] == value``; comma-separated values
    match any. ``aliases`` maps a public value to the stored values it stands for; ``allowed``
    limits the values (others are a VALIDATION_ERROR)."""
    choices = None if allowed is None else list(allowed)

    def make(raw: str) -> Callable[[dict], bool]:
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not values:
            raise validation_error(param or field_name, "give a value to filter by")
        if choices is not None:
            bad = [v for v in values if v not in choices]
            if bad:
                raise validation_error(param or field_name, f"unknown value {bad[0]!r}; "
                                       f"allowed: {', '.join(choices)}")
        wanted: set[str] = set()
        for v in values:
            wanted.update((aliases or {}).get(v, (v,)))
        return lambda item: str(item.get(field_name)) in wanted

    return make
