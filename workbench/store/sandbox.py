"""The SQL sandbox: what a user's query may read, and how that is checked before it runs.

User SQL (``workbench sql``, the app's SQL box, ``POST /api/v1/sql``) must not reach the
store's internal tables (API-key hashes, nodes, jobs, ``schema_version``), files, the network
or extensions. Three layers:

* the connection itself (``CONNECTION_CONFIG``): no external access (files, URLs), no
  extension install/autoload, no Python replacement scans, a memory limit, all locked so SQL
  cannot ``SET`` them back;
* the query is parsed by DuckDB (``json_serialize_sql``) and its syntax tree walked
  (``check_tree``): table references must be one of ``VIEWS`` or a CTE that DuckDB would bind
  at that point (its scoping rules checked conservatively), unqualified; table functions only
  the pure generators of ``TABLE_FUNCTIONS``; no function of ``DENIED_FUNCTIONS``;
* it runs under ``prelude``: a WITH clause that defines each view over its table, and shadows
  every other table of the store with a CTE that only raises, so a name always binds to a CTE,
  never to a table.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

# The queryable views: name -> columns of the table of the same name. ``params`` leaves out
# the weight blobs (``size_bytes`` says how large they are). ``run_summary``: per finished run
# and metric its final, min, max value (see :mod:`workbench.store.summary`).
VIEWS: dict[str, tuple[str, ...]] = {
    "models": ("model_id", "name", "architecture", "hyperparams", "created_at"),
    "runs": (
        "run_id", "model_id", "state", "error", "epoch", "epochs_total", "hyperparams",
        "dataset", "target", "device", "param_id", "created_at", "started_at", "finished_at",
        "updated_at", "name", "experiment", "tags", "notes",
    ),
    "metrics": ("run_id", "epoch", "step", "name", "value", "time"),
    "params": ("param_id", "model_id", "run_id", "size_bytes", "created_at"),
    "events": ("id", "run_id", "type", "time", "data"),
    "run_summary": ("run_id", "name", "final", "best_min", "best_max", "final_epoch", "points"),
    "experiments": ("name", "description", "created_at"),
}
VIEW_NAMES = ", ".join(VIEWS)

# Table functions that only generate values (no files, catalog or SQL strings).
TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})

# Scalar functions that read the environment or settings, touch sequences, sleep, log, or
# bind SQL given as a string; plus whole families by prefix.
DENIED_FUNCTIONS = frozenset({
    "getenv", "current_setting", "getvariable", "which_secret", "nextval", "currval",
    "setval", "write_log", "sleep_ms", "pg_sleep", "json_serialize_plan",
    "json_execute_serialized_sql", "query", "query_table", "glob", "read_text", "read_blob",
})
DENIED_PREFIXES = ("read_", "write_", "duckdb_", "pragma_", "parquet_", "__internal")

DEFAULT_MEMORY_LIMIT = "2GB"
MAX_TEMP_DIRECTORY_SIZE = "8GB"


def connection_config(memory_limit: str = DEFAULT_MEMORY_LIMIT) -> dict[str, Any]:
    """DuckDB settings of every store connection (the store itself needs no external access)."""
    return {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "python_enable_replacements": False,
        "memory_limit": memory_limit,
        "max_temp_directory_size": MAX_TEMP_DIRECTORY_SIZE,
        "lock_configuration": True,  # last: nothing can be changed after it
    }


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def prelude(cur: duckdb.DuckDBPyConnection) -> tuple[str, list[str]]:
    """The WITH clause user queries run under, and its CTE names in order."""
    row = cur.execute("SELECT current_database()").fetchone()
    assert row is not None
    catalog = str(row[0])
    tables = [
        r[0]
        for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
            "UNION SELECT view_name FROM duckdb_views() WHERE database_name = ? AND NOT internal "
            "ORDER BY 1",
            [catalog, catalog],
        ).fetchall()
    ]
    parts, names = [], []
    for name, columns in VIEWS.items():
        source = f"{_quote(catalog)}.main.{_quote(name)}"
        parts.append(
            f"{_quote(name)} AS NOT MATERIALIZED (SELECT {', '.join(columns)} FROM {source})"
        )
        names.append(name)
    for name in tables:
        if name.lower() not in VIEWS:
            message = f"'{name}' is not one of the queryable views: {VIEW_NAMES}"
            parts.append(
                f"{_quote(name)} AS NOT MATERIALIZED (SELECT error({_sql_string(message)}))"
            )
            names.append(name)
    return "WITH " + ",\n".join(parts) + "\n", names


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def parse(cur: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    """DuckDB's syntax tree of ``sql`` (one SELECT), as JSON."""
    row = cur.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
    assert row is not None
    tree = json.loads(row[0])
    if tree.get("error"):
        raise ValueError(tree.get("error_message") or "the query cannot be parsed")
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise PermissionError("only read-only SELECT queries are allowed (one statement)")
    node = statements[0].get("node")
    if not isinstance(node, dict):
        raise PermissionError("only read-only SELECT queries are allowed")
    return node


def check_wrapped(node: dict[str, Any], prelude_names: list[str]) -> None:
    """Check the query as it will run: our prelude around the user's query, nothing else.

    The prelude's own definitions (which read the tables) are ours and skipped; everything
    else, the user's query included, goes through ``check_tree``.
    """
    names = [e.get("key") for e in node.get("cte_map", {}).get("map", [])]
    if node.get("type") != "SELECT_NODE" or names != prelude_names:
        raise PermissionError("the query does not fit in the SQL sandbox")
    check_tree({k: v for k, v in node.items() if k != "cte_map"}, frozenset())


def check_tree(obj: Any, ctes: frozenset[str]) -> None:
    """Walk a syntax tree; ``ctes`` are the (lower-case) CTE names that bind here."""
    if isinstance(obj, list):
        for item in obj:
            check_tree(item, ctes)
        return
    if not isinstance(obj, dict):
        return
    if "cte_map" in obj:  # a query node: SELECT, set operation, recursive CTE
        _check_query(obj, ctes)
        return
    kind = obj.get("type")
    if kind == "BASE_TABLE":
        _check_table(obj, ctes)
    elif kind == "TABLE_FUNCTION":
        function = obj.get("function")
        name = function.get("function_name") if isinstance(function, dict) else None
        qualified = isinstance(function, dict) and bool(
            function.get("schema") or function.get("catalog")
        )
        if not isinstance(name, str) or qualified or name.lower() not in TABLE_FUNCTIONS:
            raise PermissionError(
                f"table function {name or '?'}() is not allowed; queries read the views "
                f"{VIEW_NAMES} (table functions allowed: {', '.join(sorted(TABLE_FUNCTIONS))})"
            )
    elif kind == "SHOW_REF" and obj.get("query") is None:
        raise PermissionError(
            f"SHOW is not available; DESCRIBE or SUMMARIZE one of the views: {VIEW_NAMES}"
        )
    if "function_name" in obj and kind != "TABLE_FUNCTION":
        _check_function(obj)
    for value in obj.values():
        check_tree(value, ctes)


def _check_query(node: dict[str, Any], ctes: frozenset[str], self_name: str | None = None) -> None:
    """A query node. DuckDB binds a WITH name only after its definition (a forward or self
    reference reaches the table), except in the recursive part of a recursive CTE."""
    visible = set(ctes)
    for entry in node.get("cte_map", {}).get("map", []):
        name = str(entry.get("key", "")).lower()
        cte = entry.get("value") or {}
        query = cte.get("query_node")
        rest = {k: v for k, v in cte.items() if k != "query_node"}
        check_tree(rest, frozenset(visible))
        if isinstance(query, dict) and "cte_map" in query:
            recursive = (
                query.get("type") == "RECURSIVE_CTE_NODE"
                and str(query.get("cte_name", "")).lower() == name
            )
            _check_query(query, frozenset(visible), name if recursive else None)
        else:
            check_tree(query, frozenset(visible))
        visible.add(name)
    scope = frozenset(visible)
    body = {k: v for k, v in node.items() if k != "cte_map"}
    if self_name is not None and "left" in body and "right" in body:
        check_tree(body.pop("left"), scope)
        check_tree(body.pop("right"), scope | {self_name})
    check_tree(body, scope)


def _check_table(ref: dict[str, Any], ctes: frozenset[str]) -> None:
    name = str(ref.get("table_name", ""))
    parts = [str(p) for p in (ref.get("catalog_name"), ref.get("schema_name"), name) if p]
    path = (ref.get("qualified_name") or {}).get("path") or [name]
    if len(path) > 1:
        parts = [str(p) for p in path]
    if len(parts) > 1 or not (name.lower() in VIEWS or name.lower() in ctes):
        raise PermissionError(
            f"'{'.'.join(parts)}' is not one of the queryable views: {VIEW_NAMES}"
        )


def _check_function(expr: dict[str, Any]) -> None:
    name = str(expr.get("function_name", "")).lower()
    if name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES):
        raise PermissionError(f"function {name}() is not allowed in queries")
