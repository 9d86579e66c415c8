"""The outbound policy (``workbench.outbound``): where the server reaches on a caller's behalf.

- ``file://`` data only under the data roots (``WORKBENCH_DATA_ROOTS``, default the data dir),
  one message for a missing file, a file outside the roots and a symlink escaping them;
- ``http(s)`` only to allowed hosts (``WORKBENCH_ALLOWED_HOSTS``, default loopback), redirects
  re-checked, one "could not fetch" for 404 / 500 / refused / timeout / a forbidden redirect;
- ``global_node_urls``, node registration and trainer devices: no remote body or /health JSON
  echoed, forbidden hosts refused before any connection, a device ``ip`` is an IP or a host name.

Unit checks in-process; the API checks against a real server on loopback (default settings).
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.utils.server import free_port
from tests.utils.v1 import wait_job
from workbench.config import get_settings
from workbench.outbound import OutboundRefused, data_path, host_allowed, is_host

SECRET = "SECRET-BODY-4f1d"  # what an internal service answers; must never come back

# ---- unit: hosts ------------------------------------------------------------------------------
LOOPBACK_OK = ["localhost", "127.0.0.1", "127.8.9.10", "::1", "LOCALHOST"]
FORBIDDEN_BY_DEFAULT = [
    "169.254.169.254", "10.0.0.1", "192.168.1.1", "172.16.0.1", "0.0.0.0", "8.8.8.8",
    "example.com", "metadata.google.internal", "2130706433", "0x7f000001", "127.1",
    "0177.0.0.1", "::ffff:169.254.169.254", "localhost.evil.example", "fe80::1", "",
    "1.2.3.4; rm -rf /",
]


@pytest.fixture
def default_settings(monkeypatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("WORKBENCH_ALLOWED_HOSTS", "WORKBENCH_DATA_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def test_default_allowlist_is_loopback_only(default_settings):
    assert all(host_allowed(h) for h in LOOPBACK_OK)
    allowed = [h for h in FORBIDDEN_BY_DEFAULT if host_allowed(h)]
    assert allowed == []


def test_allowlist_entries():
    lab = [".lab.example", "10.0.0.0/8", "gpu-box", "fd00::/8"]
    assert host_allowed("gpu1.lab.example", lab) and host_allowed("lab.example", lab)
    assert host_allowed("10.2.3.4", lab) and host_allowed("gpu-box", lab)
    assert host_allowed("fd00::5", lab)
    for host in ("evil-lab.example", "lab.example.evil", "11.0.0.1", "gpu-box2", "127.0.0.1"):
        assert not host_allowed(host, lab), host
    # "*" is any host, but link-local (cloud metadata), unspecified and multicast stay out.
    assert host_allowed("example.org", ["*"]) and host_allowed("10.1.1.1", ["*"])
    for host in ("169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1"):
        assert not host_allowed(host, ["*"]), host
    assert host_allowed("169.254.169.254", ["169.254.169.254"])  # only when named


def test_device_ip_must_be_an_address_or_a_host_name():
    good = ["192.168.1.100", "127.0.0.1", "::1", "gpu-box", "gpu-box.lab.example", "a"]
    bad = ["1.2.3.4; rm -rf /", "", " 127.0.0.1", "127.0.0.1\n", "$(reboot)", "gpu box",
           "-gpu", "a..b", "x" * 254, "http://127.0.0.1", "127.0.0.1:5001", "2130706433",
           "1.2.3", "0x7f.1", "host_name"]
    assert [v for v in good if not is_host(v)] == []
    assert [v for v in bad if is_host(v)] == []


# ---- unit: file:// ----------------------------------------------------------------------------
def test_file_urls_outside_roots_and_missing_files_read_the_same(tmp_path):
    roots = tmp_path / "roots"
    (roots / "sub").mkdir(parents=True)
    inside = roots / "sub" / "ok.npz"
    inside.write_bytes(b"x")
    outside = tmp_path / "secret.npz"
    outside.write_bytes(b"x")
    (roots / "escape.npz").symlink_to(outside)
    urls = [
        (roots / "missing.npz").as_uri(), outside.as_uri(), "file:///etc/passwd",
        (roots / "escape.npz").as_uri(), roots.as_uri() + "/../secret.npz",
        "file://otherhost" + str(inside), "file:///proc/self/environ", (roots / "nothing").as_uri(),
    ]
    messages = set()
    for url in urls:
        with pytest.raises(OutboundRefused) as info:
            data_path(url, [roots])
        messages.add(str(info.value))
    assert len(messages) == 1, messages
    assert data_path(inside.as_uri(), [roots]) == inside.resolve()


# ---- loopback servers that misbehave -------------------------------------------------------------
class _Misbehaving(http.server.BaseHTTPRequestHandler):
    """/missing.npz 404, /error.npz 500 with a body, /bounce.npz 302 to the metadata service,
    /health: JSON that is not a ready worker (and carries a secret); anything else 500."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/missing.npz":
            self.send_error(404)
        elif self.path == "/bounce.npz":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/iam")
            self.end_headers()
        elif self.path == "/health":
            body = json.dumps({"status": "degraded", "token": SECRET}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            body = f"internal error: {SECRET}".encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def bad_host() -> Iterator[str]:
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Misbehaving)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def silent_host() -> Iterator[str]:
    """Accepts connections and never answers (a filtered port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_fetch_failures_are_one_message(bad_host, silent_host, monkeypatch, default_settings):
    """404, 500, refused, timeout and a redirect to a forbidden host cannot be told apart."""
    from workbench.data import urls

    monkeypatch.setattr(urls, "_TIMEOUT_S", 0.5)
    targets = [f"{bad_host}/missing.npz", f"{bad_host}/error.npz", f"{bad_host}/bounce.npz",
               f"http://127.0.0.1:{free_port()}/data.npz", f"{silent_host}/data.npz"]
    for url in targets:
        with pytest.raises(urls.DataUrlError) as info:
            urls.probe_url(url)
        assert str(info.value) == f"could not fetch {url}", url
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1:8080/x.npz",
                "https://example.com/x.npz"):
        with pytest.raises(urls.DataUrlError, match="is not allowed"):
            urls.probe_url(url)


# ---- against a server ----------------------------------------------------------------------------
def runs(client) -> int:
    r = client.post("/api/v1/sql", json={"query": "SELECT count(*) FROM runs"})
    return r.json()["data"]["rows"][0][0]


def _digits_npz(path: Path, n: int = 200) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 255, (n, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, n, dtype=np.uint8))
    return path


def _finetune(client, trained, url: str):
    return client.post(f"/api/v1/models/{trained['job_id']}/finetune", json={
        "fine_tuning_config": {"epochs": 1}, "dataset_config": {"dataset_url": url}})


def test_finetune_reads_files_only_under_the_data_roots(client, trained, live_server, tmp_path):
    data = live_server.home / "data"
    data.mkdir(exist_ok=True)
    outside = _digits_npz(tmp_path / "outside.npz")  # readable, valid: trained on before
    (data / "escape.npz").symlink_to(outside)
    before = runs(client)
    messages = set()
    for url in (outside.as_uri(), (data / "missing.npz").as_uri(), "file:///etc/passwd",
                (data / "escape.npz").as_uri(), "file:///proc/self/environ",
                tmp_path.as_uri() + "/"):
        r = _finetune(client, trained, url)
        assert r.status_code == 422, (url, r.text)
        error = r.json()["error"]
        assert error["details"]["field"] == "dataset_config.dataset_url"
        messages.add(error["message"])
    assert len(messages) == 1, messages  # missing, outside, escaping: the same words
    assert "data roots" in messages.pop()
    assert runs(client) == before

    inside = _digits_npz(data / "digits.npz")
    accepted = _finetune(client, trained, inside.as_uri())
    assert accepted.status_code == 202, accepted.text
    assert wait_job(client, accepted.json()["data"]["finetune_job_id"])["status"] == "completed"


def test_finetune_http_failures_do_not_probe(client, trained, bad_host):
    before = runs(client)
    for path in ("/missing.npz", "/error.npz", "/bounce.npz"):
        r = _finetune(client, trained, bad_host + path)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["message"] == (
            f"dataset_config.dataset_url: could not fetch {bad_host}{path}")
        assert SECRET not in r.text
    closed = f"http://127.0.0.1:{free_port()}/x.npz"
    r = _finetune(client, trained, closed)
    assert r.json()["error"]["message"] == f"dataset_config.dataset_url: could not fetch {closed}"
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1:8080/x.npz"):
        r = _finetune(client, trained, url)
        assert r.status_code == 422 and "is not allowed" in r.json()["error"]["message"], r.text
    assert runs(client) == before


def test_global_node_urls_echo_nothing(client, bad_host):
    before = runs(client)
    messages = []
    for url in (bad_host, f"http://127.0.0.1:{free_port()}"):
        r = client.post("/api/v1/jobs/submit", json={
            "neural_model_config": {"input_dim": 784, "hidden_dims": [8], "output_dim": 10},
            "global_node_urls": [url]})
        assert r.status_code == 422, r.text
        assert SECRET not in r.text and "degraded" not in r.text
        messages.append(r.json()["error"]["message"].replace(url, "URL")
                        .replace(url.rsplit(":", 1)[1], "PORT"))
    assert messages[0] == messages[1]  # a foreign /health reads like nothing listening
    r = client.post("/api/v1/jobs/submit", json={
        "neural_model_config": {"input_dim": 784, "hidden_dims": [8], "output_dim": 10},
        "global_node_urls": ["http://169.254.169.254:80"]})
    assert r.status_code == 422 and "is not allowed" in r.json()["error"]["message"]
    assert runs(client) == before


def test_node_registration_echoes_no_remote_body(client, bad_host):
    r = client.post("/api/v1/nodes", json={"url": bad_host, "token": "t"})
    assert r.status_code == 502, r.text
    assert SECRET not in r.text
    assert "HTTP" not in r.json()["error"]["message"].replace(bad_host, "URL")
    closed = f"http://127.0.0.1:{free_port()}"
    refused = client.post("/api/v1/nodes", json={"url": closed, "token": "t"})
    assert refused.status_code == 502
    assert (refused.json()["error"]["message"].replace(closed, "URL")
            == r.json()["error"]["message"].replace(bad_host, "URL"))
    forbidden = client.post("/api/v1/nodes", json={"url": "http://10.9.8.7:8888", "token": "t"})
    assert forbidden.status_code == 422, forbidden.text
    assert forbidden.json()["error"]["details"]["field"] == "url"
    assert "is not allowed" in forbidden.json()["error"]["message"]
    assert client.get("/api/v1/nodes").json()["data"]["nodes"] == []


BAD_IPS = ["1.2.3.4; rm -rf /", "169.254.169.254", "10.0.0.5", "gpu box", "", "a" * 300,
           "$(reboot)", "127.0.0.1\n", "http://127.0.0.1", "8.8.8.8", "`id`"]


def test_trainer_device_ip_is_a_checked_host(client):
    job_id = client.post("/api/jobs", json={
        "model_config": {"layer_sizes": [784, 16, 10]},
        "dataset_config": {"name": "MNIST"}}).json()["job_id"]
    for ip in BAD_IPS:
        r = client.post("/api/devices/register", json={"ip": ip, "port": 5999, "job_id": job_id})
        assert r.status_code == 422, (ip, r.text)
        assert set(r.json()) == {"error"} and r.json()["error"].startswith("ip"), r.text
    assert client.get(f"/api/jobs/{job_id}").json()["devices"] == 0
    for port, ip in ((free_port(), "127.0.0.1"), (free_port(), "localhost")):
        r = client.post("/api/devices/register", json={"ip": ip, "port": port, "job_id": job_id})
        assert r.status_code == 200, r.text
        client.delete(f"/api/devices/{port}")


def test_the_allowlist_opens_what_the_operator_names(tmp_path, default_settings):
    """WORKBENCH_ALLOWED_HOSTS / WORKBENCH_DATA_ROOTS are the only switches."""
    default_settings.setenv("WORKBENCH_ALLOWED_HOSTS", "10.0.0.0/8, .lab.example")
    default_settings.setenv("WORKBENCH_DATA_ROOTS", os.pathsep.join([str(tmp_path / "a"),
                                                                     str(tmp_path / "b")]))
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.allowed_hosts == ["10.0.0.0/8", ".lab.example"]
    assert host_allowed("10.1.2.3") and host_allowed("gpu.lab.example")
    assert not host_allowed("127.0.0.1")  # replaced, not added to
    (tmp_path / "b").mkdir()
    f = tmp_path / "b" / "x.npz"
    f.write_bytes(b"x")
    assert data_path(f.as_uri()) == f.resolve()
    with pytest.raises(OutboundRefused):
        data_path((settings.data_dir / "x.npz").as_uri())
