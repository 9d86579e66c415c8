"""The Devices tab's actions: register a Jupyter Server as a node, check it, remove it, and
launch a run on a chosen target.

The same service calls as ``workbench nodes`` (through ``/api/v1/nodes``): the node registry of
``executors.registry.install``; registering and removing need ``admin``, checking ``read``,
launching ``train`` -- the scopes the REST routes declare (``workbench.api.policy``), asked of
this session's key at each click (``AppState.may``). The launch reuses the Train tab's form
logic (``LaunchPanel``), so its validation and messages are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import panel as pn
import param
from panel.viewable import Viewer

from ..executors.registry import install
from ..nodes import NodeAuthError, NodeError
from ..store.usage import set_node_owner
from .launch import LaunchPanel
from .state import AppState
from .theme import escape_markdown

REFUSED = ("This needs the '{scope}' scope, which this session's API key lacks "
           "(`workbench keys create --scopes {scope}` makes one).")


class NodeAdmin(Viewer):
    """Forms for nodes and a launch on a chosen target; ``on_change`` re-reads the table."""

    state = param.ClassSelector(class_=AppState)
    url = param.String(default="", doc="the Jupyter Server's address")
    token = param.String(default="", doc="the Jupyter Server's token")
    node_name = param.String(default="", doc="a name to show instead of the address")
    node = param.Selector(default=None, objects=[], allow_None=True, doc="a registered node")
    message = param.String(default="", doc="the outcome of the last action")
    failed = param.Boolean(default=False, doc="whether the last action failed")

    def __init__(self, state: AppState, on_change: Callable[[], None] | None = None,
                 **params: Any):
        super().__init__(state=state, **params)
        self._on_change = on_change or (lambda: None)
        self.launcher = LaunchPanel(state, epochs=1)
        self.refresh()

    @property
    def nodes(self) -> Any:
        return install(self.state.service).nodes

    def refresh(self) -> None:
        """Re-read the registered nodes and the targets a run may name."""
        records = self.state.service.store.list_nodes(limit=1000)
        self.param.node.objects = {f"{n.name} ({n.node_id})": n.node_id for n in records}
        if self.node not in [n.node_id for n in records]:
            self.node = records[0].node_id if records else None
        install(self.state.service)  # node ids become targets of start_run
        self.launcher._refresh_targets()

    def _report(self, text: str, *, failed: bool = False) -> bool:
        self.message, self.failed = text, failed
        return not failed

    def _allowed(self, scope: str) -> bool:
        return self.state.may(scope) or self._report(REFUSED.format(scope=scope), failed=True)

    def _changed(self) -> None:
        self.refresh()
        self._on_change()

    # ---- actions (each returns whether it succeeded) ------------------------------------------
    def register(self) -> bool:
        """Probe and register ``url`` with ``token`` (``POST /api/v1/nodes``'s call)."""
        if not self._allowed("admin"):
            return False
        url = self.url.strip()
        if not url:
            return self._report("url: give the Jupyter Server's address, e.g. "
                                "http://gpu-box:8888", failed=True)
        try:
            node = self.nodes.register(url, self.token, name=self.node_name.strip() or None)
        except NodeAuthError as exc:
            return self._report(f"token: {exc}", failed=True)
        except NodeError:  # what answered there is not echoed (the REST route's rule too)
            return self._report(f"url: could not register {url}: no Jupyter Server that can "
                                "run the capability probe answered there", failed=True)
        except ValueError as exc:
            field = "token" if str(exc).startswith("token") else "url"
            return self._report(f"{field}: {exc}", failed=True)
        key_id = getattr(self.state.authorize, "key_id", None)
        if key_id:
            set_node_owner(self.state.service.store, node.node_id, key_id)
        self.url = self.token = self.node_name = ""
        self._changed()
        self.node = node.node_id
        return self._report(f"Registered {node.name} ({node.node_id}): {node.status}.")

    def check(self) -> bool:
        """Health-check the chosen node now (``POST /api/v1/nodes/{id}/check``'s call)."""
        if not self._allowed("read"):
            return False
        if self.node is None:
            return self._report("Choose a node first.", failed=True)
        node = self.nodes.check(self.node)
        self._changed()
        detail = f" ({node.last_error})" if node.status == "offline" and node.last_error else ""
        return self._report(f"{node.name} is {node.status}{detail}.",
                            failed=node.status == "offline")

    def remove(self) -> bool:
        """Forget the chosen node and its token (``DELETE /api/v1/nodes/{id}``'s call)."""
        if not self._allowed("admin"):
            return False
        if self.node is None:
            return self._report("Choose a node first.", failed=True)
        node_id = self.node
        self.nodes.remove(node_id)
        self._changed()
        return self._report(f"Removed {node_id}.")

    def launch(self) -> str | None:
        """Start the builder's architecture on ``launcher.target``; the Train tab shows it."""
        if not self._allowed("train"):
            return None
        run_id = self.launcher.launch()
        if run_id is None:
            self._report(self.launcher.message, failed=True)
            return None
        self._report(f"Started {run_id} on {self.launcher.target}.")
        self._on_change()
        return run_id

    # ---- view ---------------------------------------------------------------------------------
    @param.depends("message", "failed")
    def _message_view(self) -> pn.viewable.Viewable:
        return pn.pane.Alert(escape_markdown(self.message),
                             alert_type="danger" if self.failed else "success",
                             visible=bool(self.message), css_classes=["wb-nodes-message"],
                             sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        w, p = pn.widgets, self.param

        def button(label: str, css: str, action: Callable[[], Any], **kw: Any) -> Any:
            b = w.Button(label=label, css_classes=[css], **kw)
            b.on_click(lambda _: action())
            return b

        launcher = self.launcher.param
        return pn.Column(
            pn.Row(
                w.TextInput.from_param(p.url, label="Jupyter Server URL", width=260,
                                       placeholder="http://gpu-box:8888",
                                       css_classes=["node-url"]),
                w.PasswordInput.from_param(p.token, label="Token", width=180,
                                           css_classes=["node-token"]),
                w.TextInput.from_param(p.node_name, label="Name", width=140,
                                       placeholder="optional", css_classes=["node-name"]),
                pn.Column(button("Register node", "node-register", self.register,
                                 button_type="primary"), margin=(18, 0)),
            ),
            pn.Row(
                w.Select.from_param(p.node, label="Node", width=260, css_classes=["node-pick"]),
                pn.Column(pn.Row(button("Check now", "node-check", self.check),
                                 button("Remove", "node-remove", self.remove,
                                        button_type="danger")), margin=(18, 0)),
            ),
            pn.Row(
                w.Select.from_param(launcher.target, label="Launch on", width=260,
                                    css_classes=["launch-target"]),
                w.IntInput.from_param(launcher.epochs, label="Epochs", width=90,
                                      css_classes=["launch-epochs"]),
                w.IntInput.from_param(launcher.limit, label="Sample cap (0 = all)", width=150,
                                      css_classes=["launch-limit"]),
                pn.Column(button("▶ Launch the builder's network here", "launch-on-target",
                                 self.launch, button_type="success"), margin=(18, 0)),
            ),
            self._message_view,
            sizing_mode="stretch_width",
        )
