"""The Devices view's actions against a real service and DuckDB store: register a real
``jupyter server`` as a node from the form (a wrong token refused, on the token field), check it,
launch the builder's network on it, remove it -- with the REST policy's scopes (a ``train`` key
may launch but not register or remove) -- and ``workbench worker``s in the targets table."""

from __future__ import annotations

import os

import pytest

from tests.test_remote_nodes import start_jupyter
from tests.utils.workers import running_workers
from workbench.config import get_settings
from workbench.executors.registry import install
from workbench.service import Workbench
from workbench.store import Store
from workbench.store.jobs import TrainerJobs
from workbench.store.usage import node_owner
from workbench.ui.builder import Builder
from workbench.ui.devices_view import DevicesView
from workbench.ui.state import AppState


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    home = tmp_path_factory.mktemp("devhome")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(home))
        mp.setenv("WORKBENCH_OFFLINE", "1")
        get_settings.cache_clear()
        svc = Workbench(Store(home / "wb.duckdb"))
        install(svc)  # what the owner does (mount_v1): node ids become targets
        yield svc
        svc.close()
        svc.store.close()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    server = start_jupyter(tmp_path_factory.mktemp("devnode"), "tok-" + os.urandom(4).hex())
    yield server
    server.kill()


def scopes(*granted: str):
    def authorize(scope: str) -> bool:
        return scope in granted

    authorize.key_id = "k_test"
    return authorize


def test_register_check_launch_remove_a_node(service, jupyter):
    state = AppState(service=service, device="cpu", authorize=scopes("read", "train", "admin"))
    Builder(state).preset = "784-64-10"
    view = DevicesView(state)
    admin = view.admin

    admin.url, admin.token = jupyter.url, "wrong-token"
    assert not admin.register()
    assert admin.failed and admin.message.startswith("token:"), admin.message
    assert service.store.list_nodes() == []

    admin.url, admin.token, admin.node_name = jupyter.url, jupyter.token, "box-a"
    assert admin.register(), admin.message
    (node,) = service.store.list_nodes()
    assert admin.node == node.node_id and node_owner(service.store, node.node_id) == "k_test"
    assert "node box-a" in view._targets.object and admin.token == ""  # the secret is not kept
    assert node.node_id in admin.launcher.param.target.objects

    assert admin.check() and "box-a is online" in admin.message

    admin.launcher.target, admin.launcher.epochs, admin.launcher.limit = node.node_id, 1, 300
    run_id = admin.launch()
    assert run_id and state.run_id == run_id, admin.message
    assert service.get_run(run_id).target == node.node_id
    assert run_id in view._targets.object or "<td>1</td>" in view._targets.object  # its queue

    # (Training on a node end to end: tests/test_remote_nodes.py.) Removing the node cancels
    # what it runs, as DELETE /api/v1/nodes/{id} does.
    assert admin.remove() and service.store.list_nodes() == []
    assert "node box-a" not in view._targets.object and admin.node is None
    assert service.wait_run(run_id, timeout=120).state in ("cancelled", "failed")


def test_actions_need_the_scopes_the_rest_routes_declare(service, jupyter):
    state = AppState(service=service, device="cpu", authorize=scopes("read", "train"))
    admin = DevicesView(state).admin
    admin.url, admin.token = jupyter.url, jupyter.token
    assert not admin.register()
    assert "'admin' scope" in admin.message and service.store.list_nodes() == []
    reader = DevicesView(AppState(service=service, device="cpu", authorize=scopes("read"))).admin
    assert reader.launch() is None and "'train' scope" in reader.message


def test_workers_show_in_the_targets_table(service, tmp_path):
    jobs = TrainerJobs(service.store)
    job = jobs.create_job(model_config={"layer_sizes": [784, 32, 10]},
                          dataset_config={"name": "mnist"})
    with running_workers(tmp_path, count=1) as (ports, _procs):
        jobs.register_device(job_id=job.job_id, ip="127.0.0.1", port=ports[0])
        view = DevicesView(AppState(service=service, device="cpu"))
        text = view._targets.object
    assert f"worker 127.0.0.1:{ports[0]}" in text and f"job {job.job_id}" in text
    row = text.split(f"worker 127.0.0.1:{ports[0]}")[1].split("</tr>")[0]
    assert "<td>online</td>" in row and "cpu" in row
    view.refresh()  # the worker has stopped: the same row, offline
    row = view._targets.object.split(f"worker 127.0.0.1:{ports[0]}")[1].split("</tr>")[0]
    assert "<td>offline</td>" in row
    jobs.unregister_port(port=ports[0])


def test_a_served_session_asks_its_own_key(service):
    """What ``ui.server`` gives each page's session: the scopes of the key behind its login
    cookie or bearer header, looked up again at each action (a revoked key loses them)."""
    from workbench.auth import KeyRing
    from workbench.ui.login import cookie_name, session_authorizer

    keyring = KeyRing(service.store)
    admin_key, admin = keyring.create(name="ui-admin", permissions="admin")
    _, trainer = keyring.create(name="ui-train", permissions="train")
    host = "127.0.0.1:8765"
    by_cookie = session_authorizer(keyring, {"host": host},
                                   {cookie_name(host): keyring.open_session(trainer)})
    assert by_cookie("train") and by_cookie("read") and not by_cookie("admin")
    by_bearer = session_authorizer(keyring, {"authorization": f"Bearer {admin_key}"}, {})
    assert by_bearer("admin") and by_bearer.key_id == admin.key_id
    keyring.revoke(admin.key_id)
    assert not by_bearer("admin") and not by_bearer("read")
    nobody = session_authorizer(keyring, {"host": host}, {cookie_name(host): "wbs_forged"})
    assert not nobody("read")
