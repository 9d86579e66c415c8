"""One set of limits (``workbench.config.Limits``, ``WORKBENCH_MAX_*``), applied by every face.

Against real servers on loopback: the parameter cap and the activation-memory cap refuse the
same networks in the MNIST MLP API (400 naming the field), ``/api/v1`` (VALIDATION_ERROR) and
the distributed-trainer API (``{"error"}``), before anything is stored; ``world_size`` is capped
at the ranks the machine runs; a full run queue answers 503 with ``Retry-After``; the CLI gets
the API's refusal. In-process: gzip IDX data is inflated against a running cap (a small bomb
never costs its inflated size), and downloads stream to disk under a byte cap.
"""

from __future__ import annotations

import gzip
import http.server
import os
import socketserver
import struct
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.utils.server import LiveServer, start_server
from workbench.config import get_settings
from workbench.spec import Architecture

HUGE = [784, 65536, 65536, 65536, 65536, 10]  # 12.9e9 parameters: accepted by /api before
OVER = [784, 8192, 8192, 10]  # 73.6 M: just a few times the cap
WIDE = [784, 2048, 10]  # 1.6 M parameters, fine; 2.6 GB of activations at batch 65536
CAP_MESSAGE = "this server trains at most 20,000,000 (WORKBENCH_MAX_PARAMS)"


def arch(sizes: list[int]) -> dict:
    return Architecture.from_layer_sizes(sizes).to_json()


def cortex(sizes: list[int]) -> dict:
    return {"input_dim": sizes[0], "hidden_dims": sizes[1:-1], "output_dim": sizes[-1]}


def trainer_job(sizes: list[int], **dataset: int) -> dict:
    return {"model_config": {"layer_sizes": sizes},
            "dataset_config": {"name": "MNIST", "batch_size": 256, **dataset}}


def counts(client) -> tuple[int, int, int]:
    """(models, runs, trainer jobs) in the store."""

    def one(sql: str) -> int:
        response = client.post("/api/v1/sql", json={"query": sql})
        assert response.status_code == 200, response.text
        return response.json()["data"]["rows"][0][0]

    jobs = client.get("/api/jobs").json()["jobs"]
    return one("SELECT count(*) FROM models"), one("SELECT count(*) FROM runs"), len(jobs)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("wbhome"),
                        extra_env={"WORKBENCH_MAX_WORLD_SIZE": "2"})
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def client(server):
    with server.http() as c:
        yield c


@pytest.fixture
def fresh_settings(monkeypatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings re-read from the environment this test sets (and restored after)."""
    for name in list(os.environ):
        if name.startswith("WORKBENCH_MAX_") or name in ("WORKBENCH_DATA_ROOTS",
                                                         "WORKBENCH_ALLOWED_HOSTS"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def _field_message(text: str) -> str:
    return text.split(": ", 1)[1]


# ---- the parameter and activation caps: one check, every family ------------------------------
def test_parameter_cap_is_one_check_for_every_family(client):
    before = counts(client)
    messages = []
    for sizes in (HUGE, OVER):
        r = client.post("/api/models", json={"architecture": arch(sizes)})
        assert r.status_code == 400, r.text
        (line,) = r.json()["errors"]
        assert line.startswith("architecture: ") and CAP_MESSAGE in line
        messages.append(_field_message(line))

        r = client.post("/api/v1/jobs/submit", json={"neural_model_config": cortex(sizes)})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"]["field"] == "neural_model_config"
        messages.append(_field_message(error["message"]))

        r = client.post("/api/jobs", json=trainer_job(sizes))
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"error"}
        assert r.json()["error"].startswith("model_config.layer_sizes: ")
        messages.append(_field_message(r.json()["error"]))
    # The same check said the same thing in all three families.
    assert messages[0] == messages[1] == messages[2]
    assert messages[3] == messages[4] == messages[5]
    assert counts(client) == before  # nothing stored


def test_activation_memory_cap(client):
    before = counts(client)
    r = client.post("/api/models", json={"architecture": arch(WIDE),
                                         "hyperparams": {"batch_size": 65536}})
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0].startswith("hyperparams.batch_size: a batch of 65536 needs")
    assert "WORKBENCH_MAX_ACTIVATION_BYTES" in r.json()["errors"][0]

    r = client.post("/api/v1/jobs/submit", json={
        "neural_model_config": cortex(WIDE), "training_config": {"batch_size": 65536}})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"]["field"] == "training_config.batch_size"

    r = client.post("/api/jobs", json=trainer_job(WIDE, batch_size=65536))
    assert r.status_code == 400 and r.json()["error"].startswith("dataset_config.batch_size: ")
    r = client.post("/api/jobs", json=trainer_job(WIDE, val_batch_size=65536))
    assert r.status_code == 400
    assert r.json()["error"].startswith("dataset_config.val_batch_size: ")
    assert counts(client) == before

    # A model that fits, trained with a batch override that does not: no run is stored.
    model = client.post("/api/models", json={"architecture": arch(WIDE)}).json()
    r = client.post(f"/api/models/{model['model_id']}/train",
                    json={"hyperparams": {"batch_size": 65536}})
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0].startswith("hyperparams.batch_size: ")
    assert counts(client)[1] == before[1]


def test_world_size_is_capped_at_the_machines_ranks(client):
    before = counts(client)
    model = client.post("/api/models", json={"architecture": arch([784, 16, 10])}).json()
    url = f"/api/models/{model['model_id']}/train"
    for body in ({"strategy": "ddp", "world_size": 3}, {"strategy": "ddp", "world_size": 64},
                 {"strategy": "pipeline", "world_size": 62},
                 {"target": "distributed", "world_size": 3}):
        r = client.post(url, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"][0].startswith("world_size: must be between 1 and 2"), r.text
    for world_size in (3, 64):
        r = client.post("/api/v1/jobs/submit", json={
            "neural_model_config": cortex([784, 16, 10]), "strategy": "ddp",
            "world_size": world_size})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"]["field"] == "world_size"
    assert counts(client)[1] == before[1]  # no run stored


def test_settings_read_every_limit_from_the_environment(fresh_settings):
    limits = get_settings().limits
    assert limits.max_params == 20_000_000
    assert limits.world_size_cap == max(2, os.cpu_count() or 1)
    assert limits.max_body_bytes == get_settings().max_body_bytes == 32 * 1024 * 1024
    env = {"WORKBENCH_MAX_PARAMS": "1000", "WORKBENCH_MAX_ACTIVATION_BYTES": "2000",
           "WORKBENCH_MAX_WORLD_SIZE": "5", "WORKBENCH_MAX_QUEUED_RUNS": "7",
           "WORKBENCH_MAX_DOWNLOAD_BYTES": "3000", "WORKBENCH_MAX_DECOMPRESSED_BYTES": "4000",
           "WORKBENCH_MAX_BODY_BYTES": "5000"}
    for name, value in env.items():
        fresh_settings.setenv(name, value)
    get_settings.cache_clear()
    limits = get_settings().limits
    assert (limits.max_params, limits.max_activation_bytes, limits.world_size_cap,
            limits.max_queued_runs, limits.max_download_bytes, limits.max_decompressed_bytes,
            get_settings().max_body_bytes) == (1000, 2000, 5, 7, 3000, 4000, 5000)


# ---- the run queue ---------------------------------------------------------------------------
def test_a_full_queue_is_503_with_retry_after(server_factory):
    live = server_factory(workers=1, extra_env={"WORKBENCH_MAX_QUEUED_RUNS": "1"})
    with live.http() as c:
        model = c.post("/api/models", json={"architecture": arch([784, 16, 10]),
                                            "hyperparams": {"epochs": 1000}}).json()
        url = f"/api/models/{model['model_id']}/train"
        running = c.post(url, json={"limit": 1000})  # occupies the only worker
        queued = c.post(url, json={"limit": 1000})  # the one queue slot
        assert running.status_code == queued.status_code == 202, queued.text
        try:
            before = counts(c)
            full = c.post(url, json={"limit": 1000})
            assert full.status_code == 503, full.text
            assert int(full.headers["Retry-After"]) > 0
            assert full.json()["detail"] == "the run queue is full"
            assert "WORKBENCH_MAX_QUEUED_RUNS" in full.json()["errors"][0]

            v1 = c.post("/api/v1/jobs/submit", json={
                "neural_model_config": cortex([784, 16, 10]), "limit": 100})
            assert v1.status_code == 503, v1.text
            assert v1.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert int(v1.headers["Retry-After"]) > 0
            assert counts(c) == before  # neither a run nor the Cortex job's model

            # A freed slot is usable again.
            c.post(f"/api/runs/{queued.json()['run_id']}/cancel")
            again = c.post(url, json={"limit": 1000})
            assert again.status_code == 202, again.text
            c.post(f"/api/runs/{again.json()['run_id']}/cancel")
        finally:
            for r in (running, queued):
                c.post(f"/api/runs/{r.json()['run_id']}/cancel")


# ---- the CLI goes through the API and gets the same refusal ------------------------------------
def test_cli_train_is_held_to_the_parameter_cap(tmp_path):
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_OFFLINE": "1"}

    def workbench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=env,
                              capture_output=True, text=True, timeout=240)

    try:
        out = workbench("train", "--layers", ",".join(map(str, HUGE)), "--epochs", "1")
        assert out.returncode == 2, out.stdout + out.stderr
        assert CAP_MESSAGE in out.stderr
    finally:
        workbench("stop")


# ---- decompression and downloads -------------------------------------------------------------
def _idx_header(dims: tuple[int, ...]) -> bytes:
    return struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def _gzip_file(path: Path, header: bytes, zeros: int) -> Path:
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(header)
        block = bytes(1 << 20)
        for _ in range(zeros >> 20):
            fh.write(block)
    return path


def _peak(fn, *args, **kwargs) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
        error = None
    except BaseException as exc:  # noqa: BLE001 - returned to the test
        error = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return error, peak


def test_gzip_bomb_idx_never_inflates_past_the_cap(tmp_path, fresh_settings):
    from workbench.data import read_idx

    fresh_settings.setenv("WORKBENCH_MAX_DECOMPRESSED_BYTES", str(32 << 20))
    get_settings.cache_clear()
    # Declares 200,000 images (157 MB of pixels) in a ~150 KB file.
    bomb = _gzip_file(tmp_path / "train-images-idx3-ubyte.gz", _idx_header((200_000, 28, 28)),
                      157 << 20)
    assert bomb.stat().st_size < 1 << 20
    error, peak = _peak(read_idx, bomb)
    assert isinstance(error, ValueError) and "over the limit" in str(error), error
    assert peak < 4 << 20, peak
    # A header that lies small, followed by 157 MB more: refused after one extra byte.
    liar = _gzip_file(tmp_path / "liar.gz", _idx_header((10, 28, 28)), 157 << 20)
    error, peak = _peak(read_idx, liar)
    assert isinstance(error, ValueError) and "trailing bytes" in str(error), error
    assert peak < 4 << 20, peak
    # The submit-time probe reads the headers only and refuses the declared size.
    from workbench.data.urls import DataUrlError, probe_url

    fresh_settings.setenv("WORKBENCH_DATA_ROOTS", str(tmp_path))
    get_settings.cache_clear()
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">HBBI", 0, 0x08, 1, 200_000))
    error, peak = _peak(probe_url, tmp_path.as_uri() + "/")
    assert isinstance(error, DataUrlError) and "over the limit" in str(error), error
    assert peak < 4 << 20


class _Files(http.server.BaseHTTPRequestHandler):
    """/big.npz: 24 MB with a Content-Length; /stream.npz: endless chunks, no length."""

    size = 24 << 20

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        block = bytes(1 << 16)
        if self.path == "/big.npz":
            self.send_response(200)
            self.send_header("Content-Length", str(self.size))
            self.end_headers()
            for _ in range(self.size // len(block)):
                self.wfile.write(block)
        elif self.path == "/stream.npz":
            self.send_response(200)
            self.end_headers()  # no length: HTTP/1.0, the body ends when the socket closes
            try:
                for _ in range(4096):
                    self.wfile.write(block)
            except (BrokenPipeError, ConnectionResetError):
                pass
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def files_url() -> Iterator[str]:
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Files)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_downloads_stream_to_disk_under_a_byte_cap(files_url, tmp_path, fresh_settings):
    from workbench.data import DownloadError
    from workbench.data.download import RemoteFile, fetch_file
    from workbench.data.urls import DataUrlError, probe_url

    fresh_settings.setenv("WORKBENCH_MAX_DOWNLOAD_BYTES", str(4 << 20))
    get_settings.cache_clear()
    for path in ("/big.npz", "/stream.npz"):  # declared too large / found too large on the way
        error, peak = _peak(probe_url, files_url + path)
        assert isinstance(error, DataUrlError), error
        assert "download limit" in str(error) and "WORKBENCH_MAX_DOWNLOAD_BYTES" in str(error)
        assert peak < 2 << 20, (path, peak)
    with pytest.raises(DownloadError, match="download limit"):
        fetch_file(RemoteFile("big.npz", "0" * 32), tmp_path / "cache", [files_url],
                   retries=1, progress=False)
    assert not list((tmp_path / "cache").iterdir())  # no partial file left behind

    # Under the cap the whole 24 MB arrives, through a file on disk, not memory.
    fresh_settings.setenv("WORKBENCH_MAX_DOWNLOAD_BYTES", str(64 << 20))
    get_settings.cache_clear()
    error, peak = _peak(probe_url, files_url + "/big.npz")
    assert isinstance(error, DataUrlError) and "not a readable .npz" in str(error), error
    assert peak < 2 << 20, peak


def test_npz_arrays_are_checked_before_they_are_read(tmp_path, fresh_settings):
    from workbench.data.urls import DataUrlError, load_url_splits

    fresh_settings.setenv("WORKBENCH_DATA_ROOTS", str(tmp_path))
    fresh_settings.setenv("WORKBENCH_MAX_DECOMPRESSED_BYTES", str(8 << 20))
    get_settings.cache_clear()
    path = tmp_path / "big.npz"
    # 12.5 MB of zeros, ~12 KB compressed.
    np.savez_compressed(path, x_train=np.zeros((16_000, 784), np.uint8),
                        y_train=np.zeros(16_000, np.uint8))
    assert path.stat().st_size < 1 << 20
    error, peak = _peak(load_url_splits, path.as_uri())
    assert isinstance(error, DataUrlError) and "over the limit" in str(error), error
    assert peak < 4 << 20, peak
