"""The dataset registry: CSV (scikit-learn's wine written out), NPZ and image folders (PNG via
Pillow) read, described (classes, counts, mean/std) and prepared once; registered by path inside
the data roots and by multipart upload over REST; trained on through ``/api/v1/networks``, with
the seeded split sizes in the run's record; bundled scikit-learn tables by name."""

import numpy as np
import pytest
from PIL import Image

from tests.utils.v1 import wait_run
from workbench.data.tables import load_prepared_splits, prepare, read_source

sklearn = pytest.importorskip("sklearn.datasets")


def wine_csv(path):
    bunch = sklearn.load_wine()
    header = ",".join([*bunch.feature_names, "label"])
    rows = [",".join([*map(repr, map(float, x)), str(bunch.target_names[t])])
            for x, t in zip(bunch.data, bunch.target)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def image_folder(root, n=30, size=12):
    """Two classes a small CNN can tell apart: horizontal vs vertical bars, noisy."""
    rng = np.random.default_rng(0)
    for name, axis in (("horizontal", 0), ("vertical", 1)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 60, (size, size)).astype(np.uint8)
            line = rng.integers(2, size - 2)
            if axis == 0:
                img[line, :] = 255
            else:
                img[:, line] = 255
            Image.fromarray(img, mode="L").save(root / name / f"{i}.png")
    return root


def test_csv_is_described_and_standardised(tmp_path):
    table = read_source(wine_csv(tmp_path / "wine.csv"))
    assert table.input_shape == [13] and len(table.feature_names) == 13
    prepared = prepare(table, tmp_path / "wine.npz")
    assert prepared.classes == ["class_0", "class_1", "class_2"]
    assert prepared.counts == [59, 71, 48] and prepared.n_samples == 178
    assert prepared.mean[0] == pytest.approx(13.0006, abs=1e-3)  # alcohol
    x = np.load(tmp_path / "wine.npz")["x"]
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-4)
    a = load_prepared_splits(tmp_path / "wine.npz", name="wine", num_classes=3, seed=1)
    b = load_prepared_splits(tmp_path / "wine.npz", name="wine", num_classes=3, seed=1)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (129, 14, 35)
    assert a.y_test.tolist() == b.y_test.tolist()  # seeded


def test_images_and_npz_and_their_errors(tmp_path):
    table = read_source(image_folder(tmp_path / "bars"))
    assert table.input_shape == [1, 12, 12] and table.kind == "images"
    prepared = prepare(table, tmp_path / "bars.npz")
    assert prepared.classes == ["horizontal", "vertical"] and prepared.counts == [30, 30]
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 0, 1]))
    assert read_source(tmp_path / "d.npz").input_shape == [3]
    Image.new("L", (5, 5)).save(tmp_path / "bars" / "vertical" / "odd.png")
    with pytest.raises(ValueError, match="vertical/odd.png: 5x5 pixels, but the first image is "
                                         "12x12"):
        read_source(tmp_path / "bars")
    (tmp_path / "bad.csv").write_text("a,b,label\n1,x,0\n2,y,1\n")
    with pytest.raises(ValueError, match="not numeric: b"):
        read_source(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="no label column 'target'"):
        read_source(tmp_path / "bad.csv", label="target")


def test_a_query_reads_only_the_tables_it_is_given(tmp_path):
    from workbench.data.tables import read_query

    tables = {"wine": wine_csv(tmp_path / "wine.csv")}
    table = read_query('SELECT * EXCLUDE (magnesium) FROM wine WHERE label <> \'class_2\'',
                       tables)
    assert table.input_shape == [12] and sorted(set(table.labels)) == ["class_0", "class_1"]
    assert len(table.labels) == 59 + 71
    secret = tmp_path / "secret.csv"
    secret.write_text("a,label\n1,0\n2,1\n")
    for sql in ("SELECT * FROM read_csv('/etc/passwd')",
                f"SELECT * FROM wine UNION ALL SELECT * FROM read_csv_auto('{secret}')",
                f"SELECT * FROM '{secret}'"):
        with pytest.raises(ValueError, match="disabled by configuration"):
            read_query(sql, tables)
    for sql in ("SET enable_external_access = true", "SELECT 1; SELECT 2",
                f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'", f"ATTACH '{tmp_path / 'x.db'}'"):
        with pytest.raises(ValueError, match="exactly one SELECT"):
            read_query(sql, tables)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "x.db").exists()
    with pytest.raises(ValueError, match="no label column 'label'"):
        read_query("SELECT alcohol FROM wine", tables)


def _train(http, architecture, dataset, **hp):
    created = http.post("/api/v1/networks", json={"architecture": architecture})
    assert created.status_code == 201, created.text
    model_id = created.json()["data"]["model_id"]
    queued = http.post(f"/api/v1/networks/{model_id}/train", json={
        "dataset": dataset, "hyperparams": {"optimizer": {"type": "adam", "lr": 0.01}, **hp}})
    assert queued.status_code == 202, queued.text
    run = wait_run(http, queued.json()["data"]["run_id"])
    assert run["state"] == "succeeded", run
    return run


WINE_MLP = {"input_shape": [13], "layers": [{"type": "linear", "out": 16}, {"type": "relu"},
                                            {"type": "linear", "out": 3}]}


def test_registered_by_path_and_upload_then_trained_over_rest(live_server, tmp_path):
    data = live_server.home / "data"
    data.mkdir(parents=True, exist_ok=True)
    wine_csv(data / "wine.csv")
    image_folder(data / "bars")
    with live_server.http() as http:
        r = http.post("/api/v1/datasets", json={"name": "wine-csv", "path": str(data / "wine.csv")})
        assert r.status_code == 201, r.text
        assert r.json()["data"]["counts"] == [59, 71, 48]
        outside = wine_csv(tmp_path / "wine.csv")
        r = http.post("/api/v1/datasets", json={"name": "elsewhere", "path": str(outside)})
        assert r.status_code == 422 and "not allowed" in r.text
        r = http.post("/api/v1/datasets", json={"name": "wine-csv", "path": str(outside)})
        assert r.status_code == 422 and "already exists" in r.text

        r = http.post("/api/v1/datasets/upload", data={"name": "wine-up"},
                      files={"file": ("wine.csv", outside.read_bytes(), "text/csv")})
        assert r.status_code == 201, r.text
        assert r.json()["data"]["source"] == "upload:wine.csv"
        r = http.post("/api/v1/datasets/upload", data={"name": "notes"},
                      files={"file": ("notes.txt", b"hello", "text/plain")})
        assert r.status_code == 422 and "expected a .csv" in r.text

        r = http.post("/api/v1/datasets", json={"name": "bars", "path": str(data / "bars")})
        assert r.status_code == 201 and r.json()["data"]["input_shape"] == [1, 12, 12]

        names = {d["name"] for d in http.get("/api/v1/datasets").json()["data"]}
        assert {"mnist", "fashion-mnist", "wine-csv", "wine-up", "bars", "iris"} <= names

        # by upload here, by path below (the image folder): both train
        run = _train(http, WINE_MLP, "wine-up", epochs=30, batch_size=32)
        assert run["metrics"]["val_accuracy"] >= 0.8, run["metrics"]
        cnn = {"input_shape": [1, 12, 12], "layers": [
            {"type": "conv2d", "out": 4, "kernel": 3}, {"type": "relu"},
            {"type": "maxpool2d", "kernel": 2}, {"type": "flatten"},
            {"type": "linear", "out": 2}]}
        run = _train(http, cnn, "bars", epochs=15, batch_size=8)
        assert run["metrics"]["val_accuracy"] >= 0.8, run["metrics"]
        iris = {"input_shape": [4], "layers": [{"type": "linear", "out": 3}]}
        run = _train(http, iris, "iris", epochs=5, batch_size=16)
        assert run["dataset"] == "iris"

        # shapes and classes are checked against the dataset before anything runs
        created = http.post("/api/v1/networks", json={"architecture": WINE_MLP}).json()
        r = http.post(f"/api/v1/networks/{created['data']['model_id']}/train",
                      json={"dataset": "bars"})
        assert r.status_code == 422 and "[1, 12, 12] (144 values)" in r.text

