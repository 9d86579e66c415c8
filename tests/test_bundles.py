"""Run bundles: a run exported from one home (a server with its own WORKBENCH_HOME), imported
into a fresh one (a second server), and rerun there by ``workbench rerun``: equal per-epoch
metrics on CPU (exit 0 and a comparison table). Bad bundles get a clear 422."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import pytest

from tests.utils.factories import mlp, quick_hyperparams
from tests.utils.v1 import wait_run
from workbench import bundles

ZIP = {"Content-Type": "application/zip"}
SLOW = pytest.mark.timeout(900)  # two servers and a CLI process on a loaded machine


def test_bad_bundles_are_refused_with_the_reason():
    with pytest.raises(bundles.BundleError, match="not a zip file"):
        bundles.read(b"hello")
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other.txt", "x")
    with pytest.raises(bundles.BundleError, match="no manifest.json"):
        bundles.read(empty.getvalue())
    good = bundles.write({"run": {"run_id": "r_x", "state": "succeeded"},
                          "model": {"architecture": mlp(8)}},
                         [[1, 10, "train_loss", 0.5, None]], [], None)
    assert bundles.read(good).epoch_metrics() == {(1, "train_loss"): 0.5}
    tampered = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, b"[[1, 10, \"train_loss\", 0.4, null]]" if name ==
                         bundles.METRICS else data)
    with pytest.raises(bundles.BundleError, match="metrics.json does not match its SHA-256"):
        bundles.read(tampered.getvalue())
    live = bundles.write({"run": {"run_id": "r_x", "state": "running"},
                          "model": {"architecture": mlp(8)}}, [], [], None)
    with pytest.raises(bundles.BundleError, match="run.state must be succeeded"):
        bundles.read(live)
    odd = bundles.write({"run": {"run_id": "r_x", "state": "failed"},
                         "model": {"architecture": mlp(8)}}, [["one", 1, "loss", 1.0, None]],
                        [], None)
    with pytest.raises(bundles.BundleError, match="integer epoch"):
        bundles.read(odd)


def test_compare_reports_differences_and_missing_values():
    a = bundles.Bundle({}, [[1, 1, "val_loss", 0.5, None], [2, 2, "val_loss", 0.4, None]], [])
    b = bundles.Bundle({}, [[1, 1, "val_loss", 0.5, None]], [])
    assert bundles.compare(a, a).equal
    result = bundles.compare(a, b)
    assert not result.equal and result.rows[-1] == (2, "val_loss", 0.4, None, None)
    c = bundles.Bundle({}, [[1, 1, "val_loss", 0.5001, None], [2, 2, "val_loss", 0.4, None]], [])
    assert not bundles.compare(a, c).equal and bundles.compare(a, c, tolerance=1e-3).equal


@SLOW
def test_export_import_into_a_fresh_home_and_rerun_equal(server_factory, tmp_path):
    first = server_factory(workers=1, timeout=300)
    with first.http() as http:
        model = http.post("/api/models", json={"architecture": mlp(16),
                                               "hyperparams": quick_hyperparams(epochs=2)}).json()
        run_id = http.post(f"/api/models/{model['model_id']}/train",
                           json={"limit": 600, "device": "cpu", "name": "to-move",
                                 "tags": ["portable"]}).json()["run_id"]
        assert wait_run(http, run_id)["state"] == "succeeded"
        exported = http.get(f"/api/runs/{run_id}/bundle")
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"] == "application/zip"
    bundle = bundles.read(exported.content)
    manifest = bundle.manifest
    assert manifest["run"]["hyperparams"]["seed"] == 0 and manifest["options"]["limit"] == 600
    assert manifest["dataset"]["source"] == "bundled-subset"
    assert len(manifest["dataset"]["checksum"]["sha256"]) == 64
    assert manifest["environment"]["packages"]["torch"]
    assert bundle.parameters and {e["type"] for e in bundle.events} >= {"run.started", "epoch"}
    path = tmp_path / "run.wbrun.zip"
    path.write_bytes(exported.content)

    second = server_factory(workers=1, timeout=300)  # a fresh home
    with second.http() as http:
        imported = http.post("/api/bundles", content=exported.content, headers=ZIP)
        assert imported.status_code == 201, imported.text
        assert imported.json()["run_id"] == run_id and imported.json()["name"] == "to-move"
        again = http.post("/api/bundles", content=exported.content, headers=ZIP)
        assert again.status_code == 409 and "already in this store" in again.text
        junk = http.post("/api/bundles", content=b"PK not really", headers=ZIP)
        assert junk.status_code == 422 and "not a zip file" in junk.json()["errors"][0]
        copy = http.get(f"/api/runs/{run_id}").json()
        assert copy["metrics"] == http.get(f"/api/runs/{run_id}").json()["metrics"]
        params = http.get(f"/api/params/{copy['param_id']}")
        assert params.status_code == 200, params.text

    out = subprocess.run([sys.executable, "-m", "workbench.cli", "rerun", str(path)],
                         env={**second.env}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "equal:" in out.stdout and "val_accuracy" in out.stdout, out.stdout
    with second.http() as http:
        rows = http.get("/api/runs/table", params={"filter": "tag:rerun"}).json()["items"]
        assert len(rows) == 1 and rows[0]["state"] == "succeeded", json.dumps(rows)[:500]
