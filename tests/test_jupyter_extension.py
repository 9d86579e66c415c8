"""The workbench inside JupyterLab: a real ``jupyter lab`` on 127.0.0.1 with a token.

- the server extensions are enabled by the shipped ``jupyter_server_config.d`` file;
- jupyter-server-proxy lists the "NN Workbench" launcher tile;
- ``/workbench/api/...`` reaches the REST API with Jupyter's token (the proxy adds the API key)
  and is refused without it;
- with a standalone ``workbench serve`` owning the store, Jupyter attaches to it (DuckDB's
  one-writer rule) instead of opening the file;
- after the tile has opened the app, the quickstart notebook runs top to bottom in the same
  Lab's environment (no lock error) and its run is visible in the tile's app API;
- in Chromium, the launcher shows the tile and clicking it opens the app in a JupyterLab tab.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.browser import CHROMIUM, chromium, needs_chromium
from tests.utils.shots import screenshot_dir
from workbench.jupyter.proxy import TITLE, setup_workbench
from workbench.jupyter.server import LocalJupyter, free_port

REPO = Path(__file__).resolve().parents[1]
# The app imports torch, panel and plotly in a fresh process: its first start is slow.
APP_TIMEOUT_S = 90
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _config_env(tmp: Path) -> dict[str, str]:
    """Where Jupyter finds ``nn_workbench.json``. A wheel install puts it in
    ``{sys.prefix}/etc/jupyter`` (test_binder.py checks that route); setuptools' editable installs
    skip data files, so a development checkout gets the very same file in the user config dir."""
    from jupyter_core.paths import jupyter_config_path

    shipped = REPO / "extensions" / "jupyter_server_config.d" / "nn_workbench.json"
    config_dir = tmp / "jupyter-config"
    (config_dir / "jupyter_server_config.d").mkdir(parents=True, exist_ok=True)
    if not any((Path(p) / "jupyter_server_config.d" / shipped.name).exists()
               for p in jupyter_config_path()):
        shutil.copy(shipped, config_dir / "jupyter_server_config.d" / shipped.name)
    return {"JUPYTER_CONFIG_DIR": str(config_dir)}


def _lab_env(home: Path, **extra: str) -> dict[str, str]:
    # Empty values: a WORKBENCH_TOKEN / SERVER_URL of the person running the tests must not leak in.
    return {"WORKBENCH_HOME": str(home), "WORKBENCH_OFFLINE": "1", "WORKBENCH_TOKEN": "",
            "WORKBENCH_SERVER_URL": "", **_config_env(home.parent), **extra}


def _client(jp: LocalJupyter) -> httpx.Client:
    return httpx.Client(base_url=jp.url, timeout=APP_TIMEOUT_S, trust_env=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalJupyter]:
    home = tmp_path_factory.mktemp("wb-home")
    with LocalJupyter(app="lab", env=_lab_env(home)) as jp:
        yield jp


def test_entry_point_is_a_valid_server_process() -> None:
    from importlib.metadata import entry_points

    from jupyter_server_proxy.config import ServerProcess

    (ep,) = [e for e in entry_points(group="jupyter_serverproxy_servers") if e.name == "workbench"]
    config = ep.load()()
    assert config == setup_workbench()
    process = ServerProcess(name=ep.name, **config)  # jupyter-server-proxy's own validation
    assert process.launcher_entry.enabled and process.launcher_entry.title == TITLE
    assert Path(process.launcher_entry.icon_path).read_text().lstrip().startswith("<svg")
    assert process.unix_socket is True and process.new_browser_tab is False
    # The tile relays to the store's owner (found or started by the front door), never opens it.
    assert config["command"]("/tmp/x/socket")[-4:] == ["workbench.jupyter.relay", "--uds",
                                                       "/tmp/x/socket", "--owner"]


def test_extensions_are_enabled(lab: LocalJupyter) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_server", "extension", "list"], env=lab.env,
        capture_output=True, text=True, timeout=120, cwd=lab.root_dir,
    )
    listing = ANSI.sub("", out.stdout + out.stderr)
    assert re.search(r"workbench\.jupyter\s+enabled", listing), listing
    assert re.search(r"workbench\.jupyter\s+OK", listing), listing
    assert re.search(r"jupyter_server_proxy\s+enabled", listing), listing


def test_launcher_tile_is_listed(lab: LocalJupyter) -> None:
    with _client(lab) as c:
        info = c.get("server-proxy/servers-info", headers=lab.auth).json()
        (tile,) = [s for s in info["server_processes"] if s["name"] == "workbench"]
        assert tile["launcher_entry"]["enabled"] and tile["launcher_entry"]["title"] == TITLE
        assert tile["new_browser_tab"] is False
        icon = c.get(tile["launcher_entry"]["icon_url"].lstrip("/"), headers=lab.auth)
        assert icon.status_code == 200 and b"<svg" in icon.content


def test_api_through_jupyter_needs_the_jupyter_token(lab: LocalJupyter) -> None:
    with _client(lab) as c:
        health = c.get("workbench/api/health", headers=lab.auth)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        # An authenticated API route: 404 (not 401) shows the proxy supplied a valid API key.
        missing = c.get(f"workbench/api/runs/r_{uuid.uuid4()}", headers=lab.auth)
        assert missing.status_code == 404, missing.text
        status = c.get("api/workbench/status", headers=lab.auth).json()
        assert status["server"].startswith("unix:")  # this Jupyter's own, on a private socket
    # Fresh clients: the one above holds Jupyter's login cookie now.
    for headers in ({}, {"Authorization": "token not-the-token"}):
        with _client(lab) as anonymous:
            for path in ("workbench/api/health", f"workbench/api/runs/r_{uuid.uuid4()}"):
                refused = anonymous.get(path, headers=headers)
                assert refused.status_code in (302, 403), (path, refused.status_code)
                if refused.status_code == 302:
                    assert "/login" in refused.headers["location"]
            assert anonymous.get("api/workbench/status", headers=headers).status_code == 403


def test_quickstart_runs_beside_the_open_tile(lab: LocalJupyter) -> None:
    """The tile's app is open (it started the home's owner); the quickstart notebook then runs
    top to bottom in a kernel of the same Lab environment, through the same owner, and its run
    shows in the tile's app API."""
    import nbformat
    from nbclient import NotebookClient

    with _client(lab) as c:
        assert c.get("workbench/api/health", headers=lab.auth).status_code == 200  # tile open
        before = c.get("api/workbench/status", headers=lab.auth).json()["server_pid"]
        nb = nbformat.read(REPO / "notebooks" / "01-quickstart.ipynb", as_version=4)
        kernel_env = {**os.environ, **lab.env}
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(lab.root_dir)}}
                       ).execute(env=kernel_env)
        errors = [o for cell in nb.cells for o in cell.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, errors
        run_ids = re.findall(r"r_[0-9a-f]{32}", str(nb.cells))
        assert run_ids, "the quickstart printed no run id"
        run = c.get(f"workbench/api/runs/{run_ids[0]}", headers=lab.auth)
        assert run.status_code == 200 and run.json()["state"] == "succeeded", run.text
        after = c.get("api/workbench/status", headers=lab.auth).json()["server_pid"]
        assert after == before  # one owner for the tile and the notebook


def _wait_http(url: str, timeout: float = APP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.25)
    raise TimeoutError(url)


def test_attaches_to_a_running_workbench_serve(tmp_path: Path) -> None:
    """A standalone server owns the store: Jupyter relays to it and never opens the file."""
    home, key, port = tmp_path / "home", "wb_test-attach-key", free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_TOKEN": key,
           "WORKBENCH_OFFLINE": "1"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "serve", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        direct = f"http://127.0.0.1:{port}"
        _wait_http(f"{direct}/api/health")
        model = httpx.post(
            f"{direct}/api/models", headers={"Authorization": f"Bearer {key}"}, trust_env=False,
            json={"architecture": {"input_size": 784, "layers": [
                {"type": "linear", "in": 784, "out": 10}]}},
        )
        assert model.status_code in (200, 201), model.text
        model_id = model.json()["model_id"]
        with LocalJupyter(app="lab", env=_lab_env(home, WORKBENCH_TOKEN=key)) as jp, \
                _client(jp) as c:
            status = c.get("api/workbench/status", headers=jp.auth).json()
            assert status["server"] == direct
            runs = c.get(f"workbench/api/models/{model_id}/runs", headers=jp.auth)
            assert runs.status_code == 200, runs.text  # the standalone server's store
            assert serve.poll() is None
        if CHROMIUM.exists():  # the README's REST picture: the explorer of this server
            _screenshot(f"{direct}/api/explorer", "/api/models", screenshot_dir() / "rest-explorer.png")
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def _screenshot(url: str, wait_text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(url)
        page.get_by_text(wait_text).first.wait_for(timeout=30_000)
        page.screenshot(path=str(path))


@needs_chromium
def test_launcher_tile_opens_the_app_in_a_tab(lab: LocalJupyter) -> None:
    # No "fetch Jupyter news?" toast over the screenshots (a user setting, in the lab's temp dir).
    notification = (Path(lab.env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
                    / "notification.jupyterlab-settings")
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text('{"fetchNews": "false"}')
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{lab.url}lab?token={lab.token}")
        tile = page.locator(".jp-LauncherCard", has_text=TITLE)
        tile.wait_for(timeout=60_000)
        page.screenshot(path=str(screenshot_dir() / "jupyterlab-launcher.png"))
        tile.click()
        frame = page.locator("iframe[src*='/workbench/']")
        frame.wait_for(timeout=30_000)
        tab = page.get_by_role("tab", name=TITLE)  # a JupyterLab main-area tab
        assert tab.get_attribute("aria-selected") == "true"
        # The app itself inside the tab: Bokeh/Panel elements exist only once the document
        # arrived over Panel's websocket, so this also shows the websocket passes the proxy.
        app = page.frame_locator("iframe[src*='/workbench/']")
        app.locator("[class*='bk-']").first.wait_for(timeout=APP_TIMEOUT_S * 1000)
        page.wait_for_timeout(3000)  # let Panel finish its first render for the picture
        page.screenshot(path=str(screenshot_dir() / "jupyterlab-app.png"))

