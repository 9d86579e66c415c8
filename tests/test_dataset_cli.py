"""Registered datasets from the faces that are clients of the owner: ``workbench train
--dataset NAME|ID`` (a real CLI subprocess), ``notebook.train(..., dataset=ID)`` and the
client's registration by path and by DuckDB query (refused from reading other files), all
through one on-demand owner of a temporary home, as tests/test_cli.py does."""

import os
import subprocess
import sys

import pytest

from tests.test_datasets import wine_csv
from workbench import notebook
from workbench.client import ApiError
from workbench.config import get_settings
from workbench.frontdoor import connect

pytest.importorskip("sklearn.datasets")


@pytest.mark.timeout(900)  # two trainings and three CLI runs on a busy machine
def test_cli_and_notebook_train_on_a_registered_dataset(tmp_path, monkeypatch):
    home = tmp_path / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_OFFLINE": "1"}
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")
    get_settings.cache_clear()

    def workbench(*args):
        return subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=env,
                              capture_output=True, text=True, timeout=300)

    try:
        client = connect(quiet=True)  # starts this home's owner on demand
        data = get_settings().file_roots[0]
        data.mkdir(parents=True, exist_ok=True)
        path = wine_csv(data / "wine-cli.csv")
        dataset_id = client.register_dataset("wine-cli", path=str(path))["dataset_id"]

        # a DuckDB query over the registered CSV is a dataset too; it reads nothing else
        strong = client.register_dataset("wine-strong",
                                         query='SELECT * FROM "wine-cli" WHERE alcohol > 13')
        assert strong["kind"] == "query" and strong["n_samples"] == 92
        with pytest.raises(ApiError, match="disabled by configuration"):
            client.register_dataset("passwd",
                                    query="SELECT *, 0 AS label FROM read_csv('/etc/passwd')")
        assert {"wine-cli", "wine-strong"} <= {d["name"] for d in client.datasets()}

        out = workbench("train", "--layers", "13,16,3", "--dataset", "wine-cli", "--epochs",
                        "20", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.01")
        assert out.returncode == 0, out.stderr
        assert "succeeded" in out.stdout and "wine-cli" in out.stdout
        line = next(x for x in out.stdout.splitlines() if x.strip().startswith("val_accuracy"))
        assert float(line.split()[-1]) >= 0.8, out.stdout

        refused = workbench("train", "--layers", "13,16,10", "--dataset", dataset_id)
        assert refused.returncode != 0
        assert "the network outputs 10 classes but wine-cli has 3" in refused.stderr
        refused = workbench("train", "--layers", "13,3", "--dataset", "wine-cli",
                            "--target", "local-kernel")
        assert refused.returncode != 0 and "local target only" in refused.stderr

        notebook.use(client)
        try:
            run = notebook.train([13, 16, 3], {"epochs": 10, "batch_size": 32,
                                               "optimizer": {"type": "adam", "lr": 0.01}},
                                 dataset=dataset_id, wait=True, show=False)
        finally:
            notebook.use(None)
        record = client.get_run(run.run_id)
        assert record["state"] == "succeeded" and record["dataset"] == "wine-cli", record
        assert record["metrics"]["val_accuracy"] >= 0.8, record["metrics"]
        client.close()
    finally:
        workbench("stop")
        get_settings.cache_clear()
