"""The SQL sandbox of ``Store.query`` (``workbench sql``, the app's SQL box, ``POST /api/v1/sql``).

Every escape below worked against the store before the sandbox: reading files and the
environment, the network, the key hashes and node tables, extensions, settings, and queries
that never end. Each is now refused with a specific error, and the documented views still
answer. Real DuckDB files, no mocks.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from workbench.events import make_event
from workbench.store import Store, sandbox
from workbench.store.sql import QueryTimeoutError

VIEWS_MESSAGE = ("is not one of the queryable views: models, runs, metrics, params, events, "
                 "run_summary, experiments")
KEY_HASH = "f" * 64
NODE_TOKEN = "token-node-secret-4711"
ENV_SECRET = "env-secret-0815"


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    tokens = home / "node_tokens.json"
    tokens.write_text(json.dumps({"node_1": NODE_TOKEN}))
    tokens.chmod(0o600)
    return home


@pytest.fixture
def store(home):
    with Store(home / "workbench.duckdb") as s:
        model = s.create_model(architecture={"layers": [{"type": "linear", "out": 10}]},
                               hyperparams={"lr": 0.1}, name="tiny")
        run = s.create_run(model_id=model.model_id, hyperparams={"lr": 0.1}, epochs_total=1)
        s.apply_event(make_event("run.started", run.run_id, device="cpu"))
        s.apply_event(make_event("epoch", run.run_id, epoch=1, step=10, val_accuracy=0.9))
        s.save_params(model_id=model.model_id, run_id=run.run_id,
                      safetensors=b"WEIGHTS" * 100, size_bytes=700)
        s.create_api_key(name="admin", key_hash=KEY_HASH)
        s.create_node(url="http://127.0.0.1:9/", name="n1")
        yield s


def refused(store: Store, sql: str, match: str) -> None:
    with pytest.raises(PermissionError, match=match):
        store.query(sql, timeout_s=5)


# -- files and the environment ------------------------------------------------------------------


def test_no_files(store, home):
    refused(store, "SELECT content FROM read_text('/proc/self/environ')", r"read_text\(\) is not allowed")
    refused(store, f"SELECT content FROM read_text('{home / 'node_tokens.json'}')", "read_text")
    refused(store, "SELECT * FROM read_csv('/etc/passwd')", r"read_csv\(\) is not allowed")
    refused(store, "SELECT * FROM read_blob('/etc/hostname')", r"read_blob\(\) is not allowed")
    refused(store, "SELECT * FROM '/etc/passwd'", f"'/etc/passwd' {VIEWS_MESSAGE}")
    refused(store, f"SELECT * FROM '{home / 'node_tokens.json'}'", VIEWS_MESSAGE)
    refused(store, "SELECT * FROM glob('/*')", r"glob\(\) is not allowed")
    refused(store, "SELECT getenv('HOME')", r"getenv\(\) is not allowed")
    refused(store, "SELECT current_setting('temp_directory')", r"current_setting\(\) is not allowed")


def test_no_network(store):
    refused(store, "SELECT * FROM read_csv('https://example.com/data.csv')", "read_csv")
    refused(store, "SELECT * FROM 'http://127.0.0.1:9/x.parquet'", VIEWS_MESSAGE)
    refused(store, "SELECT * FROM read_parquet('s3://bucket/x.parquet')", "read_parquet")


def test_the_connection_itself_has_no_file_network_or_extension_access(store, home):
    """Layer 1: even SQL that got past the checks could not reach a file or load anything."""
    con = store._conn()
    secret = home / "node_tokens.json"
    for sql in (f"SELECT * FROM read_text('{secret}')", "SELECT * FROM read_csv('/etc/passwd')",
                "SELECT * FROM glob('/*')", "SELECT * FROM 'https://example.com/x.csv'"):
        with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
            con.execute(sql).fetchall()
    settings = dict(con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
        "'autoinstall_known_extensions', 'autoload_known_extensions', 'lock_configuration', "
        "'allow_community_extensions')").fetchall())
    assert settings == {"enable_external_access": "false", "autoinstall_known_extensions": "false",
                        "autoload_known_extensions": "false", "lock_configuration": "true",
                        "allow_community_extensions": "false"}


# -- internal tables --------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["api_keys", "nodes", "schema_version", "trainer_jobs",
                                   "trainer_devices", "teraflops_sessions"])
def test_internal_tables_are_unreachable(store, table):
    refused(store, f"SELECT * FROM {table}", f"'{table}' {VIEWS_MESSAGE}")
    refused(store, f"SELECT count(*) FROM runs WHERE run_id IN (SELECT 1 FROM {table})", table)
    refused(store, f"SELECT * FROM main.{table}", f"'main.{table}' {VIEWS_MESSAGE}")
    refused(store, f"SELECT * FROM workbench.main.{table}", f"'workbench.main.{table}'")
    refused(store, f"SELECT * FROM query_table('{table}')", r"query_table\(\) is not allowed")
    refused(store, f"DESCRIBE {table}", table)
    refused(store, f"SUMMARIZE {table}", table)


def test_key_hashes_and_node_tokens_never_come_back(store, home):
    attempts = [
        "SELECT hash FROM api_keys",
        "SELECT (SELECT max(hash) FROM api_keys)",
        "SELECT * FROM runs, api_keys",
        "SELECT * FROM runs UNION ALL BY NAME SELECT * FROM api_keys",
        'SELECT * FROM "api_keys"',
        "FROM API_KEYS",
        "FROM runs, LATERAL (SELECT * FROM api_keys)",
        "SELECT * FROM runs r POSITIONAL JOIN api_keys",
        "SELECT * FROM runs WHERE EXISTS (FROM api_keys)",
        "SELECT unnest((SELECT list(hash) FROM api_keys))",
        "SELECT * FROM unnest((SELECT list(hash) FROM api_keys))",
        "WITH RECURSIVE t AS (SELECT 1 AS x UNION ALL SELECT x FROM t, api_keys) SELECT * FROM t",
        "WITH x AS MATERIALIZED (SELECT * FROM api_keys) SELECT * FROM x",
        "DESCRIBE (SELECT * FROM api_keys)",
        "SUMMARIZE SELECT hash FROM api_keys",
        "SELECT * FROM query('SELECT * FROM api_keys')",
        "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT * FROM api_keys'))",
        "SELECT * FROM pragma_table_info('api_keys')",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM duckdb_settings()",
        "SELECT * FROM duckdb_secrets()",
        "SELECT sql FROM duckdb_tables",
        "SELECT * FROM sqlite_master",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM pg_catalog.pg_tables",
        f"SELECT content FROM read_text('{home / 'node_tokens.json'}')",
        "SHOW TABLES",
        "SHOW ALL TABLES",
        "SHOW api_keys",
        "PRAGMA table_info('api_keys')",
        "PRAGMA show_tables",
        "CALL pragma_table_info('api_keys')",
    ]
    for sql in attempts:
        with pytest.raises(PermissionError) as info:
            store.query(sql, timeout_s=5)
        assert KEY_HASH not in str(info.value) and NODE_TOKEN not in str(info.value), sql


@pytest.mark.parametrize("sql", [
    # A WITH name binds only after its definition: forward and self references reach a table.
    "WITH a AS (SELECT * FROM api_keys), api_keys AS (SELECT 1 AS hash) SELECT * FROM a",
    "WITH api_keys AS (SELECT * FROM api_keys) SELECT * FROM api_keys",
    "WITH RECURSIVE api_keys AS (SELECT * FROM api_keys) SELECT * FROM api_keys",
    # ... and the anchor of a recursive CTE cannot see itself either.
    "WITH RECURSIVE api_keys(hash) AS (SELECT hash FROM api_keys UNION SELECT 'x') "
    "SELECT * FROM api_keys",
    # A CTE of a subquery is not visible outside it.
    "SELECT (WITH api_keys AS (SELECT 1) SELECT 1), * FROM api_keys",
    "SELECT * FROM (WITH nodes AS (SELECT 1) SELECT * FROM nodes), nodes",
])
def test_cte_names_cannot_smuggle_a_table(store, sql):
    refused(store, sql, VIEWS_MESSAGE)


def test_the_prelude_shadows_every_table_even_past_the_checks(store):
    """Layer 3: under the prelude, an internal table's name binds to a CTE that only raises."""
    cur = store._conn().cursor()
    try:
        with_views, names = sandbox.prelude(cur)
        assert {"api_keys", "nodes", "schema_version", "trainer_jobs"} <= set(names)
        for body in ("SELECT * FROM api_keys", "SELECT * FROM nodes",
                     "WITH a AS (SELECT * FROM api_keys), api_keys AS (SELECT 1) SELECT * FROM a"):
            with pytest.raises(duckdb.Error, match="not one of the queryable views") as info:
                cur.execute(f"{with_views}SELECT * FROM (\n{body}\n)").fetchall()
            assert KEY_HASH not in str(info.value)
        rows = cur.execute(with_views + "SELECT * FROM params").fetchall()
        assert rows and all(b"WEIGHTS" not in repr(r).encode() for r in rows)
    finally:
        cur.close()


# -- statements, extensions, settings --------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET memory_limit = '100GB'",
    "RESET lock_configuration",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "COPY (SELECT 1) TO '{tmp}/out.csv'",
    "EXPORT DATABASE '{tmp}/dump'",
])
def test_statements_are_refused_and_the_connection_refuses_them_too(store, tmp_path, sql):
    sql = sql.format(tmp=tmp_path)
    refused(store, sql, "only read-only SELECT queries are allowed")
    with pytest.raises(duckdb.Error, match="disabled|locked|Cannot change"):
        store._conn().execute(sql)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_side_effects_and_sleeps_are_refused(store):
    refused(store, "SELECT nextval('events_id_seq')", r"nextval\(\) is not allowed")
    refused(store, "SELECT currval('events_id_seq')", r"currval\(\) is not allowed")
    refused(store, "SELECT write_log('x')", r"write_log\(\) is not allowed")
    refused(store, "SELECT sleep_ms(60000)", r"sleep_ms\(\) is not allowed")
    refused(store, "SELECT json_serialize_plan('SELECT * FROM api_keys')", "json_serialize_plan")
    refused(store, "SELECT main.getenv('HOME')", r"getenv\(\) is not allowed")


# -- time and memory limits --------------------------------------------------------------------


def test_a_query_that_never_ends_is_interrupted(store):
    assert inspect.signature(store.query).parameters["timeout_s"].default == 5
    for sql in ("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) "
                "SELECT count(*) FROM t",
                "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"):
        started = time.monotonic()
        with pytest.raises(QueryTimeoutError, match="query interrupted after 1 s"):
            store.query(sql, timeout_s=1)
        assert time.monotonic() - started < 4
    assert issubclass(QueryTimeoutError, TimeoutError) and issubclass(QueryTimeoutError, ValueError)
    # The store works normally afterwards, writes included.
    assert store.query("SELECT count(*) FROM models", timeout_s=5) == (["count_star()"], [(1,)])
    assert store.create_model(architecture={}, hyperparams={}).model_id


def test_memory_limit(tmp_path):
    with Store(tmp_path / "small.duckdb", memory_limit="64MB") as small:
        (value,) = small._conn().execute("SELECT current_setting('memory_limit')").fetchone()
        assert value.startswith("61.0 MiB")
        # Normal store work fits (a 4 MiB blob, events, metrics) ...
        m = small.create_model(architecture={}, hyperparams={})
        run = small.create_run(model_id=m.model_id, hyperparams={}, epochs_total=1)
        for epoch in range(1, 21):
            small.apply_event(make_event("epoch", run.run_id, epoch=epoch, train_loss=1 / epoch))
        small.save_params(model_id=m.model_id, run_id=run.run_id,
                          safetensors=os.urandom(4 << 20), size_bytes=4 << 20)
        assert len(small.get_metrics(run.run_id)) == 20
        # ... a query that needs more does not.
        with pytest.raises(ValueError, match="out of memory"):
            small.query("SELECT length(string_agg(repeat('x', 1000), '')) FROM range(200000)",
                        timeout_s=30)
        assert small.query("SELECT count(*) FROM params", timeout_s=5)[1] == [(1,)]


# -- what users may query ---------------------------------------------------------------------


def test_documented_views_answer(store):
    for view, columns in sandbox.VIEWS.items():
        cols, rows = store.query(f"SELECT * FROM {view}", timeout_s=5)
        # runs: one running; no summary of a running run, no experiment record yet
        assert cols == list(columns) and (rows or view in ("run_summary", "experiments")), view
    cols, _ = store.query("SELECT * FROM params", timeout_s=5)
    assert "safetensors" not in cols and "size_bytes" in cols
    assert [r[0] for r in store.query("DESCRIBE params", timeout_s=5)[1]] == list(
        sandbox.VIEWS["params"])
    assert store.query("SUMMARIZE metrics", timeout_s=5)[1]
    # The notebook's and the CLI test's queries.
    cols, rows = store.query(
        "SELECT m.name AS model, r.run_id, r.state, "
        "max(x.value) FILTER (WHERE x.name = 'val_accuracy') AS best_val_accuracy "
        "FROM runs r JOIN models m USING (model_id) JOIN metrics x USING (run_id) "
        "GROUP BY ALL ORDER BY best_val_accuracy DESC", timeout_s=5)
    assert cols == ["model", "run_id", "state", "best_val_accuracy"] and rows[0][0] == "tiny"
    assert store.query("SELECT r.state, count(DISTINCT m.epoch) AS epochs FROM runs r "
                       "JOIN metrics m USING (run_id) WHERE m.name = 'val_accuracy' "
                       "GROUP BY r.state", timeout_s=5)[1] == [("running", 1)]
    assert store.query("SELECT type FROM events ORDER BY id", timeout_s=5)[1] == [
        ("run.started",), ("epoch",)]


def test_ordinary_sql_still_works(store):
    q = lambda sql: store.query(sql, timeout_s=5)[1]  # noqa: E731
    assert q("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) "
             "SELECT sum(n) FROM t") == [(15,)]
    assert q("WITH runs AS (SELECT 7 AS x) SELECT x FROM runs") == [(7,)]  # a CTE may shadow
    assert q("WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS y FROM a) SELECT y FROM b") == [(2,)]
    assert q("FROM models SELECT name") == [("tiny",)]
    store.create_experiment("widths", "Does a wider MLP help?")
    assert q("SELECT e.name, e.description, count(r.run_id) FROM experiments e LEFT JOIN runs r"
             " ON r.experiment = e.name GROUP BY ALL") == [("widths", "Does a wider MLP help?", 0)]
    assert q("SELECT json_extract(hyperparams, '$.lr')::DOUBLE FROM RUNS") == [(0.1,)]
    assert q("SELECT count(*) FROM range(10) t(i), generate_series(1, 2)") == [(20,)]
    assert q("SELECT key FROM json_each((SELECT hyperparams FROM models))") == [("lr",)]
    assert q("SELECT list_transform([1, 2], lambda x: x * 2)") == [([2, 4],)]
    assert q("SELECT 1 AS one; -- trailing comment\n") == [(1,)]
    pivot = "SELECT * FROM (SELECT state FROM runs) PIVOT (count(*) FOR state IN ('running'))"
    assert store.query(pivot, timeout_s=5) == (["running"], [(1,)])
    with pytest.raises(ValueError, match="syntax error"):
        store.query("SELEC * FROM runs", timeout_s=5)


def test_read_only_store_is_sandboxed_too(store, home):
    path = store.path
    store.close()
    with Store(path, read_only=True) as ro:
        assert ro.query("SELECT count(*) FROM runs", timeout_s=5)[1] == [(1,)]
        refused(ro, "SELECT * FROM api_keys", VIEWS_MESSAGE)
        refused(ro, "SELECT * FROM read_text('/proc/self/environ')", "read_text")
        with pytest.raises(duckdb.PermissionException):
            ro._conn().execute("SELECT * FROM read_text('/proc/self/environ')").fetchall()


def test_workbench_sql_command(home):
    """The CLI face (through the front door's owner and ``POST /api/v1/sql``): the refusal is
    reported (exit 2) and no secret comes back."""
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_OFFLINE": "1",
           "SANDBOX_PROBE": ENV_SECRET}

    def workbench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=env,
                              capture_output=True, text=True, timeout=240)

    try:
        for sql, message in (
            ("SELECT content FROM read_text('/proc/self/environ')", "read_text() is not allowed"),
            ("SELECT hash FROM api_keys", f"'api_keys' {VIEWS_MESSAGE}"),
        ):
            out = workbench("sql", sql)
            assert out.returncode == 2, out.stdout + out.stderr
            assert message in out.stderr
            assert ENV_SECRET not in out.stdout + out.stderr
        assert json.loads(workbench("sql", "--json", "SELECT count(*) AS n FROM runs").stdout) == [
            {"n": 0}]
    finally:
        workbench("stop")  # the on-demand owner the first call started
