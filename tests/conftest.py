"""Shared fixtures. Live-server helpers live in ``tests/utils/server.py``.

Hermetic by construction: before anything imports ``workbench``, the whole session gets a
temporary ``HOME``, ``WORKBENCH_HOME`` and Jupyter/IPython config, data and runtime dirs, so no
test (nor any server, kernel or Jupyter it starts) reads or writes the user's home -- a
``workbench serve`` running on the real default home is invisible to the suite.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SANDBOX = Path(tempfile.mkdtemp(prefix="workbench-tests-"))
_REAL_HOME = os.environ.get("HOME", "")
for _name, _sub in {
    "HOME": "home",
    "WORKBENCH_HOME": "home/.workbench",
    "JUPYTER_CONFIG_DIR": "home/.jupyter",
    "JUPYTER_DATA_DIR": "home/.local/share/jupyter",
    "JUPYTER_RUNTIME_DIR": "runtime/jupyter",
    "IPYTHONDIR": "home/.ipython",
    "XDG_CONFIG_HOME": "home/.config",
    "XDG_CACHE_HOME": "home/.cache",
    "XDG_DATA_HOME": "home/.local/share",
    "XDG_RUNTIME_DIR": "runtime",
    "MPLCONFIGDIR": "home/.config/matplotlib",
}.items():
    (_SANDBOX / _sub).mkdir(parents=True, exist_ok=True)
    os.environ[_name] = str(_SANDBOX / _sub)
os.chmod(_SANDBOX / "runtime", 0o700)
# Playwright's browsers and pip's cache are machine-wide, not the user's work: keep them usable.
os.environ.setdefault("PIP_CACHE_DIR", str(Path(_REAL_HOME or "/root") / ".cache" / "pip"))
# A server URL or token from the user's shell must not redirect the suite to their server.
for _name in ("WORKBENCH_SERVER_URL", "WORKBENCH_TOKEN", "WORKBENCH_DATA"):
    os.environ.pop(_name, None)
# Owners the front door starts on demand for a test's home stop soon after the test, and all
# left are stopped at the end of the session (pytest_sessionfinish).
os.environ["WORKBENCH_OWNER_IDLE_S"] = "120"

from collections.abc import Callable, Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.utils.server import LiveServer, start_server  # noqa: E402


@pytest.fixture
def server_factory(tmp_path_factory) -> Iterator[Callable[..., LiveServer]]:
    """Start real ``workbench serve`` subprocesses; every one is stopped after the test.
    ``server_factory(home=None, **kw)``: a fresh home unless one is given (to restart)."""
    started: list[LiveServer] = []

    def make(home=None, **kwargs) -> LiveServer:
        home = home or tmp_path_factory.mktemp("wbhome")
        server = start_server(home, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def client(live_server):
    """An authenticated ``httpx.Client`` on the module's ``live_server``."""
    with live_server.http() as c:
        yield c


@pytest.fixture(scope="module")
def trained(client):
    """A completed one-epoch Cortex job on 500 samples (``/api/v1/jobs/submit``)."""
    from tests.utils.v1 import submit_job, wait_job

    job = submit_job(client, epochs=1, limit=500)
    assert wait_job(client, job["job_id"])["status"] == "completed"
    return job


@pytest.fixture(scope="module")
def offline_service(tmp_path_factory):
    """An in-process ``Workbench`` on a fresh offline home, shared by a test module (the app's
    component tests drive its views with it)."""
    from workbench.config import get_settings
    from workbench.service import Workbench
    from workbench.store import Store

    home = tmp_path_factory.mktemp("wbhome")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_HOME", str(home))
    mp.setenv("WORKBENCH_OFFLINE", "1")
    get_settings.cache_clear()
    svc = Workbench(Store(home / "wb.duckdb"))
    yield svc
    svc.close()
    svc.store.close()
    mp.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    """One server shared by a test module (fresh store, WORKBENCH_OFFLINE=1)."""
    server = start_server(tmp_path_factory.mktemp("wbhome"))
    try:
        yield server
    finally:
        server.stop()


def pytest_sessionfinish(session, exitstatus):
    """Stop every store owner a test left running (on-demand owners are detached processes)."""
    import json
    import signal
    import time

    roots = [_SANDBOX]
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        roots.append(factory.getbasetemp())
    pids = []
    for root in roots:
        for info in Path(root).rglob("owner.json"):
            try:
                pid = int(json.loads(info.read_text())["pid"])
                # A stale file (a killed owner) may name a pid the system has reused since.
                if b"workbench" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
            except (OSError, ValueError, KeyError):
                continue
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
