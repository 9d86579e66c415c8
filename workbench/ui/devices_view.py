"""Devices: where runs can go (``targets_view``) and the actions on it (``nodes_admin``: register,
check and remove nodes, launch on a target), the distributed trainer's layer allocation per job,
and per-device TFLOPS history.

- **Stages** of a job (``/api/jobs/<id>``'s ``allocation``): which consecutive layers run on
  which device, the layer sizes at each stage's boundaries, the stage's forward + backward FLOPs
  per sample and its share of the model's, and the device's measured score.
- **TFLOPS history per device**: forward / backward TFLOPS of every past training session, the
  data behind ``/api/previous_teraflops``.

Read through ``TrainerJobs`` on the service's store (what ``TrainerService`` and its routes
read), never over HTTP.
"""

from __future__ import annotations

from typing import Any

import panel as pn
import param
import plotly.graph_objects as go
from panel.viewable import Viewer

from ..store.jobs import TrainerJob, TrainerJobs
from .nodes_admin import NodeAdmin
from .state import AppState
from .targets_view import target_rows, targets_table
from .theme import escape_html, html

PALETTE = ("#2563eb", "#f97316", "#059669", "#7c3aed", "#db2777", "#0891b2", "#ca8a04")


def stage_rows(job: TrainerJob) -> list[dict[str, Any]]:
    """One row per pipeline stage of ``job`` (empty before ``/network/initialize``)."""
    stages = job.allocation or []
    total = sum(s.get("forward_flops", 0) + s.get("backward_flops", 0) for s in stages) or 1
    rows = []
    for s in stages:
        flops = s.get("forward_flops", 0) + s.get("backward_flops", 0)
        rows.append({
            "stage": s.get("stage"), "device_id": s.get("device_id"),
            "address": f"{s.get('ip', '?')}:{s.get('port', '?')}",
            "layers": f"{s.get('start')}–{int(s.get('end', 0)) - 1}",
            "sizes": "→".join(str(n) for n in s.get("layer_sizes") or []),
            "forward_flops": s.get("forward_flops", 0), "backward_flops": s.get("backward_flops", 0),
            "share": flops / total, "score_tflops": s.get("score"),
        })
    return rows


def stages_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ("<div class='wb-empty'>No allocation yet: the job's layers are split over its "
                "devices once it is initialized.</div>")
    head = ("<tr><th>stage</th><th>device</th><th>spec layers</th><th>sizes</th>"
            "<th>FLOPs / sample (fwd + bwd)</th><th>share</th><th>score (TFLOPS)</th></tr>")
    body = "".join(
        f"<tr><td>{escape_html(r['stage'])}</td><td>#{escape_html(r['device_id'])} "
        f"<small>{escape_html(r['address'])}</small></td>"  # a registered ip is user text
        f"<td>{escape_html(r['layers'])}</td><td>{escape_html(r['sizes'])}</td>"
        f"<td>{r['forward_flops']:,} + {r['backward_flops']:,}</td>"
        f"<td><b>{100 * r['share']:.1f}%</b></td>"
        f"<td>{'–' if r['score_tflops'] is None else format(r['score_tflops'], '.3g')}</td></tr>"
        for r in rows)
    return f"<table class='wb-stages'>{head}{body}</table>"


def stages_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """One stacked bar: each stage's share of the model's training FLOPs, labelled by device."""
    fig = go.Figure(layout=dict(
        title=dict(text="FLOPs share by stage", x=0.02, font=dict(size=14)), barmode="stack",
        template="plotly_white", height=180, margin=dict(l=20, r=20, t=40, b=30),
        xaxis=dict(range=[0, 100], ticksuffix="%"), yaxis=dict(visible=False), showlegend=False))
    for r in rows:
        fig.add_bar(x=[100 * r["share"]], y=["job"], orientation="h",
                    name=f"stage {r['stage']}", marker_color=PALETTE[r["stage"] % len(PALETTE)],
                    text=[f"stage {r['stage']} · device #{r['device_id']} · {r['sizes']}"],
                    textposition="inside", insidetextanchor="middle")
    return fig


def teraflops_history(sessions: list[dict[str, dict[str, float]]]) -> go.Figure:
    """Forward (solid) and backward (dashed) TFLOPS per device over the sessions."""
    fig = go.Figure(layout=dict(
        title=dict(text="TFLOPS per device, by training session", x=0.02, font=dict(size=14)),
        template="plotly_white", height=320, margin=dict(l=50, r=20, t=40, b=40),
        xaxis=dict(title="session", dtick=1), yaxis=dict(title="TFLOPS"),
        legend=dict(orientation="h", y=-0.25)))
    devices = sorted({d for s in sessions for d in s})
    for i, device in enumerate(devices):
        xs = [n for n, s in enumerate(sessions, 1) if device in s]
        color = PALETTE[i % len(PALETTE)]
        for key, dash in (("forward_tflops", "solid"), ("backward_tflops", "dash")):
            fig.add_scatter(x=xs, y=[sessions[n - 1][device].get(key) for n in xs],
                            name=f"device {device} {key.split('_')[0]}", mode="lines+markers",
                            line=dict(color=color, dash=dash))
    if not sessions:
        fig.add_annotation(text="no distributed training sessions yet", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


STAGES_CSS = """
.wb-stages { border-collapse: collapse; width: 100%; font-size: 13px; }
.wb-stages th { text-align: left; color: #64748b; font-weight: 600; font-size: 11px;
  text-transform: uppercase; letter-spacing: .04em; border-bottom: 1px solid #e2e8f0; }
.wb-stages td, .wb-stages th { padding: 6px 10px; }
.wb-stages tr:nth-child(even) td { background: #f8fafc; }
"""


class DevicesView(Viewer):
    """Where runs can go (this machine and every node); a distributed-trainer job's stages; the
    TFLOPS history per device."""

    state = param.ClassSelector(class_=AppState)
    job_id = param.Selector(default=None, objects=[], allow_None=True, doc="the job shown")

    def __init__(self, state: AppState, **params: Any):
        super().__init__(state=state, **params)
        self.jobs = TrainerJobs(state.service.store)
        self._targets = html("", css_classes=["wb-targets-table"], sizing_mode="stretch_width",
                             stylesheets=[STAGES_CSS])
        self._stages = html("", css_classes=["wb-stage-table"], sizing_mode="stretch_width")
        self._stages.stylesheets = [*self._stages.stylesheets, STAGES_CSS]
        self._share = pn.pane.Plotly(go.Figure(), height=180, sizing_mode="stretch_width",
                                     config={"displaylogo": False}, css_classes=["chart-stages"])
        self._history = pn.pane.Plotly(go.Figure(), height=320, sizing_mode="stretch_width",
                                       config={"displaylogo": False},
                                       css_classes=["chart-device-tflops"])
        self.admin = NodeAdmin(state, on_change=self._refresh_targets)
        self.refresh()

    def _refresh_targets(self) -> None:
        self._targets.object = targets_table(target_rows(
            self.state.service, known_peaks={self.state.device: self.state.peak_tflops}))

    def refresh(self) -> None:
        """Re-read devices, nodes, workers, jobs and sessions from the store."""
        self.admin.refresh()
        self._refresh_targets()
        jobs = self.jobs.list_jobs()
        self._by_id = {j.job_id: j for j in jobs}
        ids = [j.job_id for j in reversed(jobs)]  # newest first
        self.param.job_id.objects = ids
        if self.job_id not in ids:
            self.job_id = ids[0] if ids else None
        self._show_job()
        self._history.object = teraflops_history(self.jobs.list_sessions())

    @param.depends("job_id", watch=True)
    def _show_job(self) -> None:
        job = self._by_id.get(self.job_id) if self.job_id else None
        rows = stage_rows(job) if job else []
        if job is None:
            self._stages.object = ("<div class='wb-empty'>No distributed-trainer jobs yet. "
                                   "To train on this machine or a node, use the Train tab "
                                   "and pick the target there.</div>")
        else:
            self._stages.object = (f"<p>job <code>{escape_html(job.job_id)}</code> · "
                                   f"{escape_html(job.status)} · layers "
                                   f"{escape_html(job.model_config.get('layer_sizes'))} · "
                                   f"{len(job.devices)} device(s)</p>" + stages_table(rows))
        self._share.object = stages_figure(rows)
        self._share.visible = bool(rows)

    def __panel__(self) -> pn.viewable.Viewable:
        refresh = pn.widgets.Button(label="↻ Refresh", width=100)
        refresh.on_click(lambda _: self.refresh())
        return pn.Column(
            pn.Row(pn.widgets.Select.from_param(self.param.job_id, label="Job", width=200),
                   pn.Column(refresh, margin=(18, 0))),
            html("<h3 class='wb-h'>Where runs can go</h3>"),
            self._targets,
            html("<h3 class='wb-h'>Register a node · check · remove · launch here</h3>"),
            self.admin,
            html("<h3 class='wb-h'>Distributed-trainer jobs: pipeline stages</h3>"),
            self._stages, self._share,
            html("<h3 class='wb-h'>TFLOPS history per device</h3>"),
            self._history,
            sizing_mode="stretch_width",
        )
