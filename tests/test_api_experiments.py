"""Organising, finding, comparing and sharing runs over REST (a real server), and the
``workbench runs`` / ``run-update`` / ``compare`` commands against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pytest

from tests.utils.factories import mlp, quick_hyperparams


@pytest.fixture(scope="module")
def runs(client):
    """Two tracked runs (one tagged 'baseline') and one trained run of a model 'fashion-128'."""
    made = {}
    for name, lr, accs, tags in (("sgd-run", 0.1, [0.5, 0.7], []),
                                 ("adam-run", 0.001, [0.6, 0.95], ["baseline"])):
        r = client.post("/api/runs", json={"name": name, "experiment": "sweep", "tags": tags,
                                           "config": {"optimizer": "adam" if lr < 0.01 else "sgd",
                                                      "lr": lr, "batch_size": 32}})
        assert r.status_code == 201, r.text
        run_id = r.json()["run_id"]
        points = [{"key": "val_accuracy", "value": a, "step": i} for i, a in enumerate(accs)]
        assert client.post(f"/api/runs/{run_id}/log-batch",
                           json={"metrics": points}).status_code == 200
        assert client.post(f"/api/runs/{run_id}/finish", json={}).status_code == 200
        made[name] = run_id
    model = client.post("/api/models", json={"architecture": mlp(16), "name": "fashion-128"})
    assert model.status_code == 200, model.text
    train = client.post(f"/api/models/{model.json()['model_id']}/train", json={
        "hyperparams": quick_hyperparams(epochs=1), "limit": 300, "offline": True,
        "name": "trained", "tags": ["mlp"]})
    assert train.status_code == 202, train.text
    run_id = train.json()["run_id"]
    r = client.get(f"/api/runs/{run_id}/events", params={"after": 0, "wait": 60})
    while client.get(f"/api/runs/{run_id}").json()["state"] in ("queued", "running"):
        client.get(f"/api/runs/{run_id}/events", params={"after": r.json()["last_id"],
                                                         "wait": 20})
    made["trained"] = run_id
    return made


def test_table_newest_first_with_columns_filter_and_paging(client, runs):
    body = client.get("/api/runs/table").json()
    assert [r["name"] for r in body["items"]] == ["trained", "adam-run", "sgd-run"]
    trained = body["items"][0]
    assert (trained["model"], trained["architecture"], trained["tags"]) == (
        "fashion-128", "784-16-10", ["mlp"])
    assert trained["optimizer"] == "adam" and trained["test_accuracy"] is not None
    assert body["items"][1]["lr"] == 0.001 and body["items"][1]["best_val_accuracy"] == 0.95
    page = client.get("/api/runs/table", params={
        "filter": "val_accuracy > 0.9 and optimizer = adam and tag:baseline",
        "columns": "name,experiment", "limit": 1}).json()
    assert page == {"columns": ["name", "experiment"], "total": 1, "next_offset": None,
                    "items": [{"name": "adam-run", "experiment": "sweep"}]}
    sorted_ = client.get("/api/runs/table", params={"sort": "lr", "columns": "name,lr",
                                                    "filter": "experiment:sweep", "limit": 1})
    assert sorted_.json()["items"] == [{"name": "adam-run", "lr": 0.001}]
    assert sorted_.json()["next_offset"] == 1


@pytest.mark.parametrize("params, fragment", [
    ({"filter": "val_accuracy >"}, "expected a value, found the end of the filter (at position 14)"),
    ({"filter": "nope = 3"}, "unknown column or metric 'nope'"),
    ({"sort": "-nope"}, "sort: unknown column 'nope'"),
    ({"columns": "name,bogus"}, "columns: unknown 'bogus'"),
])
def test_bad_table_requests_are_422_saying_why(client, runs, params, fragment):
    r = client.get("/api/runs/table", params=params)
    assert r.status_code == 422 and fragment in " ".join(r.json()["errors"]), r.text


def test_rename_tag_move_and_bad_values(client, runs):
    run_id = runs["sgd-run"]
    r = client.patch(f"/api/runs/{run_id}", json={"name": "sgd-renamed", "tags": ["old", "x"],
                                                  "notes": "too slow"})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["tags"], r.json()["notes"]) == (
        "sgd-renamed", ["old", "x"], "too slow")
    assert client.get(f"/api/runs/{run_id}").json()["name"] == "sgd-renamed"
    assert client.get(f"/api/runs/{run_id}/tracking").json()["name"] == "sgd-renamed"
    bad = client.patch(f"/api/runs/{run_id}", json={"tags": ["a,b"]})
    assert bad.status_code == 422 and "tags" in bad.text
    assert client.patch(f"/api/runs/{run_id}", json={"colour": 1}).status_code == 422
    assert client.patch("/api/runs/r_missing", json={"name": "x"}).status_code == 404
    assert client.get(f"/api/runs/{run_id}").json()["tags"] == ["old", "x"]
    spaced = client.patch(f"/api/runs/{run_id}", json={"tags": ["old", " two  words "]})
    assert spaced.status_code == 200 and spaced.json()["tags"] == ["old", "two  words"]
    found = client.get("/api/runs/table", params={"filter": 'tag:"two  words"'}).json()
    assert [r["run_id"] for r in found["items"]] == [run_id]
    experiments = {e["name"]: e for e in client.get("/api/experiments").json()["items"]}
    assert experiments["sweep"]["runs"] == 2 and experiments["default"]["runs"] == 1
    assert {"tag": "baseline", "runs": 1} in client.get("/api/tags").json()["items"]


def test_experiment_records_create_describe_and_list(client, runs):
    made = client.post("/api/experiments", json={"name": "widths",
                                                 "description": "Does a wider MLP help?"})
    assert made.status_code == 201, made.text
    assert (made.json()["name"], made.json()["runs"], made.json()["best"]) == ("widths", 0, None)
    again = client.post("/api/experiments", json={"name": "widths"})
    assert again.status_code == 409 and "exists already" in again.text
    assert client.post("/api/experiments", json={"name": " "}).status_code == 422
    assert client.post("/api/experiments", json={"name": "x", "colour": 1}).status_code == 422
    sweep = client.patch("/api/experiments/sweep", json={"description": "lr sweep"})
    assert sweep.status_code == 200, sweep.text
    body = client.get("/api/experiments/sweep").json()
    assert (body["description"], body["runs"]) == ("lr sweep", 2)
    assert body["best"]["run_name"] == "adam-run" and body["best"]["value"] == 0.95
    listed = {e["name"]: e for e in client.get("/api/experiments").json()["items"]}
    assert listed["widths"]["description"] == "Does a wider MLP help?"
    assert listed["sweep"]["description"] == "lr sweep"
    assert client.get("/api/experiments/nope").status_code == 404
    assert client.patch("/api/experiments/nope", json={"description": "x"}).status_code == 404
    too_long = client.patch("/api/experiments/sweep", json={"description": "d" * 20_001})
    assert too_long.status_code == 422
    # a name with slashes (a team's "project/question" naming) is one path parameter
    nested = client.post("/api/experiments", json={"name": "mnist/widths"})
    assert nested.status_code == 201, nested.text
    for path in ("/api/experiments/mnist%2Fwidths", "/api/experiments/mnist/widths",
                 "/api/v1/experiments/mnist/widths"):
        got = client.get(path)
        assert got.status_code == 200 and "mnist/widths" in got.text, (path, got.text)
    described = client.patch("/api/v1/experiments/mnist%2Fwidths", json={"description": "d"})
    assert described.status_code == 200 and described.json()["data"]["description"] == "d"
    assert client.get("/api/experiments/mnist").status_code == 404


def test_v1_runs_table_compare_and_experiments_are_enveloped(client, runs):
    page = client.get("/api/v1/runs/table", params={
        "filter": "experiment:sweep", "sort": "bestValAccuracy:desc",
        "fields": "runId,bestValAccuracy", "limit": 1, "page": 2}).json()
    assert page["success"] and page["data"] == [{"run_id": runs["sgd-run"],
                                                 "best_val_accuracy": 0.7}]
    assert page["meta"]["pagination"] == {"total": 2, "page": 2, "limit": 1, "pages": 2}
    for params, field in (({"filter": "lr >"}, "filter"), ({"sort": "nope:desc"}, "sort"),
                          ({"fields": "name,bogus"}, "fields"), ({"colour": "red"}, "colour")):
        bad = client.get("/api/v1/runs/table", params=params)
        assert bad.status_code == 422, (params, bad.text)
        assert bad.json()["error"]["details"]["field"] == field
    ids = [runs["sgd-run"], runs["adam-run"]]
    compared = client.post("/api/v1/runs/compare", json={"run_ids": ids,
                                                         "metrics": ["val_accuracy"]}).json()
    assert compared["success"] and compared["data"]["run_ids"] == ids
    missing = client.post("/api/v1/runs/compare", json={"run_ids": ["r_nope"]})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    made = client.post("/api/v1/experiments", json={"name": "v1 exp", "description": "d"})
    assert made.status_code == 201 and made.json()["data"]["description"] == "d"
    again = client.post("/api/v1/experiments", json={"name": "v1 exp"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"
    assert client.patch("/api/v1/experiments/v1 exp", json={"description": "e"}).json()[
        "data"]["description"] == "e"
    listed = client.get("/api/v1/experiments", params={"sort": "name:asc",
                                                       "fields": "name,runs"}).json()
    names = [e["name"] for e in listed["data"]]
    assert names == sorted(names) and "v1 exp" in names and set(listed["data"][0]) == {
        "name", "runs"}
    assert listed["meta"]["pagination"]["total"] == len(names)
    gone = client.get("/api/v1/experiments/nope")
    assert gone.status_code == 404 and gone.json()["success"] is False


def test_compare_diff_series_and_report(client, runs):
    ids = [runs["sgd-run"], runs["adam-run"]]
    body = client.post("/api/runs/compare", json={"run_ids": ids, "metrics": ["val_accuracy"],
                                                  "x": "step"}).json()
    diff = {d["key"]: d for d in body["diff"]}
    assert diff["hp.lr"]["differs"] and diff["hp.lr"]["values"] == [0.1, 0.001]
    assert not diff["experiment"]["differs"]
    assert body["series"][runs["adam-run"]]["val_accuracy"] == {"x": [0, 1], "y": [0.6, 0.95]}
    assert set(body["names"].values()) >= {"adam-run"}
    bad = client.post("/api/runs/compare", json={"run_ids": [], "x": "epoch"})
    assert bad.status_code == 422
    assert client.post("/api/runs/compare", json={"run_ids": ["r_nope"]}).status_code == 404
    page = client.post("/api/runs/report", json={"run_ids": ids, "title": "LR sweep"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "LR sweep" in page.text and "adam-run" in page.text
    assert "<script src" not in page.text and "<link" not in page.text  # nothing to fetch


def test_export_csv_and_parquet(client, runs, tmp_path):
    csv = client.get("/api/runs/export", params={"format": "csv", "columns": "name,lr",
                                                 "sort": "name"})
    assert csv.status_code == 200
    assert csv.text.splitlines()[0] == "name,lr" and len(csv.text.splitlines()) == 4
    parquet = client.get("/api/runs/export", params={"format": "parquet",
                                                     "filter": "experiment = sweep"})
    path = tmp_path / "runs.parquet"
    path.write_bytes(parquet.content)
    rows = duckdb.sql(f"SELECT name, lr FROM '{path}' ORDER BY lr").fetchall()
    assert [r[1] for r in rows] == [0.001, 0.1]
    assert client.get("/api/runs/export", params={"format": "xls"}).status_code == 422


def _cli(live_server, *args):
    env = {**os.environ, "WORKBENCH_SERVER_URL": live_server.url,
           "WORKBENCH_TOKEN": live_server.token}
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_runs_by_model_name_filter_update_compare_report(live_server, runs, tmp_path):
    out = _cli(live_server, "runs", "--model", "fashion-128", "--json")
    assert out.returncode == 0, out.stderr
    assert [r["name"] for r in json.loads(out.stdout)] == ["trained"]
    out = _cli(live_server, "runs", "--filter", "best_val_accuracy > 0.9", "--columns",
               "name,best_val_accuracy")
    assert out.returncode == 0 and "adam-run" in out.stdout and "trained" not in out.stdout
    bad = _cli(live_server, "runs", "--filter", "lr >> 3")
    assert bad.returncode == 2 and "position" in bad.stderr
    out = _cli(live_server, "run-update", runs["trained"], "--experiment", "mlp-sizes")
    assert out.returncode == 0 and "experiment=mlp-sizes" in out.stdout
    report = tmp_path / "r.html"
    out = _cli(live_server, "compare", runs["adam-run"], runs["trained"], "--report",
               str(report))
    assert out.returncode == 0, out.stderr
    assert "Plotly" in report.read_text() and "adam-run" in report.read_text()
    exported = tmp_path / "runs.csv"
    assert _cli(live_server, "runs", "--export", str(exported)).returncode == 0
    out = _cli(live_server, "experiments", "--create", "cli exp", "--description",
               "made from the CLI")
    assert out.returncode == 0 and "made from the CLI" in out.stdout, out.stderr
    assert _cli(live_server, "experiments", "--create", "cli exp").returncode != 0
    out = _cli(live_server, "experiments", "--describe", "mlp-sizes", "--description",
               "sizes of the MLP")
    assert out.returncode == 0, out.stderr
    out = _cli(live_server, "experiments")
    assert "sizes of the MLP" in out.stdout and "cli exp" in out.stdout
    out = _cli(live_server, "run-update", runs["trained"], "--tags", "mlp,two words")
    assert out.returncode == 0, out.stderr
    out = _cli(live_server, "runs", "--tag", "two words", "--json")
    assert [r["name"] for r in json.loads(out.stdout)] == ["trained"]
    assert exported.read_text().startswith("run_id,name,")


def test_notebook_runs_newest_first_compare_and_report(live_server, runs, tmp_path):
    from workbench import notebook as wb
    from workbench.client import Client

    wb.use(Client(live_server.url, live_server.token))
    try:
        frame = wb.runs()
        assert frame.iloc[0]["run_id"] == runs["trained"]  # .head() is the latest run
        assert frame["created_at"].is_monotonic_decreasing
        assert list(wb.runs(model_id="fashion-128")["run_id"]) == [runs["trained"]]
        picked = wb.runs(filter="tag:baseline", columns=["name", "lr"])
        assert picked.to_dict("records") == [{"name": "adam-run", "lr": 0.001}]
        diff = wb.compare([runs["sgd-run"], runs["adam-run"]])
        assert diff.loc["hp.lr", "differs"] and not diff.loc["experiment", "differs"]
        path = wb.report([runs["adam-run"]], str(tmp_path / "r.html"))
        assert "adam-run" in (tmp_path / "r.html").read_text() and path.endswith("r.html")
    finally:
        wb.use(None)
