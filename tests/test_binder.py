"""Binder: the install steps of ``binder/`` on a clean checkout and a fresh virtual environment.

repo2docker runs ``pip install -r binder/requirements.txt``, then ``binder/postBuild``. This test
runs the same two steps, from a copy of the checkout's files (tracked and new, not ignored --
what a clone holds), into a new ``python -m venv`` that sees this environment's packages, **offline**: pip gets
``--no-index`` (so neither PyPI nor the CPU-torch index is asked) and no build isolation, and
the venv sees the third-party wheels this environment installed from ``requirements/dev.lock``
-- the lock that ``binder/requirements.txt`` also constrains to, so a pin the binder files
contradict fails here. That keeps the test at seconds on a machine without network; the
package itself, its entry point and its ``jupyter_server_config.d`` file are installed into the
venv for real by the binder steps. Then a JupyterLab started from that venv, with no other
step, lists the extensions as enabled, shows the "NN Workbench" tile and opens on the
quickstart notebook.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from workbench.jupyter.proxy import TITLE
from workbench.jupyter.server import LocalJupyter

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = "notebooks/01-quickstart.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout")


def _checkout_copy(dest: Path) -> None:
    """The files a fresh clone (plus uncommitted work) would have: tracked and untracked,
    minus what .gitignore excludes (build outputs, stores, egg-info)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return ANSI.sub("", out.stdout + out.stderr)


@pytest.fixture(scope="module")
def binder_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict]]:
    root = tmp_path_factory.mktemp("binder")
    clone, venv = root / "repo", root / "venv"
    _checkout_copy(clone)
    # --without-pip: the venv's own (older) pip and setuptools would shadow the locked ones.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = venv / "bin" / "pip"  # the locked pip, run by this venv's python (installs here)
    pip.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n')
    pip.chmod(0o755)
    # The new venv sees the packages of the environment running the tests (installed from the
    # lock) as already installed: a path file, not --system-site-packages, because that
    # environment is itself a virtualenv (CI's), whose packages "system" would not include.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True)
    import sysconfig

    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib.stdout.strip()) / "_tested_environment.pth").write_text("\n".join(here) + "\n")
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        # Offline and bounded: every requirement is already installed (from the lock), so no
        # index is asked; setuptools comes from the environment, not an isolated build env.
        "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_RETRIES": "0",
        "HOME": str(root / "home"),  # postBuild must not write into the real home
    }
    env.pop("PYTHONPATH", None)
    # repo2docker's two steps, from the repository root.
    _run(["pip", "install", "-r", "binder/requirements.txt"], cwd=clone, env=env)
    _run(["bash", "binder/postBuild"], cwd=clone, env=env)
    yield clone, python, env


def test_package_installed_into_the_venv(binder_env: tuple[Path, Path, dict]) -> None:
    clone, python, env = binder_env
    where = _run([str(python), "-c", "import workbench, sys; print(workbench.__file__); "
                  "print(sys.prefix)"], cwd=clone.parent, env=env).split()
    assert where[0].startswith(where[1])  # the venv's copy, not the development checkout
    conf = Path(where[1]) / "etc" / "jupyter" / "jupyter_server_config.d"
    assert (conf / "nn_workbench.json").exists()
    assert QUICKSTART in (conf.parent / "jupyter_lab_config.json").read_text()
    found = _run([str(python), "-c", (
        "from jupyter_server_proxy.config import get_entrypoint_server_processes as g\n"
        "for p in g(): print(p.name, p.launcher_entry.title, p.launcher_entry.icon_path, sep='|')"
    )], cwd=clone.parent, env=env)
    name, title, icon = next(line for line in found.splitlines() if line.startswith("workbench|")
                             ).split("|")
    assert title == TITLE and icon.startswith(where[1]) and Path(icon).exists()


def test_extension_enabled_by_the_install_alone(binder_env: tuple[Path, Path, dict]) -> None:
    clone, python, env = binder_env
    listing = _run([str(python), "-m", "jupyter_server", "extension", "list"],
                   cwd=clone.parent, env=env)
    venv_conf = str(Path(python).parents[1] / "etc" / "jupyter")
    section = listing.split(f"Config dir: {venv_conf}")[1].split("Config dir:")[0]
    assert re.search(r"workbench\.jupyter\s+enabled", section), listing
    assert re.search(r"workbench\.jupyter\s+OK", section), listing
    assert re.search(r"jupyter_server_proxy\s+enabled", section), listing


def test_fresh_jupyterlab_shows_the_tile_and_opens_the_quickstart(
    binder_env: tuple[Path, Path, dict], tmp_path: Path,
) -> None:
    clone, python, env = binder_env
    env = {**env, "WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_OFFLINE": "1"}
    with LocalJupyter(app="lab", python=str(python), root_dir=clone, env=env) as jp, \
            httpx.Client(base_url=jp.url, trust_env=False, timeout=30) as c:
        info = c.get("server-proxy/servers-info", headers=jp.auth).json()
        assert any(s["name"] == "workbench" and s["launcher_entry"]["title"] == TITLE
                   for s in info["server_processes"])
        landing = c.get("", headers=jp.auth, follow_redirects=False)
        assert landing.status_code == 302
        assert landing.headers["location"].rstrip("?").endswith("/lab/tree/" + QUICKSTART)
        assert c.get(f"api/contents/{QUICKSTART}", headers=jp.auth).status_code == 200
