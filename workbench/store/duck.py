"""DuckDB-backed store: the one ``Store`` facade, composed from one mixin per entity.

Like MLflow's SqlAlchemyStore, callers see a single object; its operations are grouped by
entity in sibling modules, each small and with one job:

    connection.py  opening (single-writer lock, migrations, recovery), ``_tx`` / ``_read``
    models.py      models                      runs.py     runs, state machine, recovery
    events.py      event log, ``apply_event``  params.py   trained weights (safetensors)
    metrics.py     long-form metrics           sql.py      the user's read-only query
    keys.py        API-key hashes              nodes.py    registered compute nodes
    datasets.py    the dataset registry        checkpoints.py  training checkpoints (files)
    imports.py     a run from a bundle
    sandbox.py     what user SQL may read      values.py   JSON and id helpers
    runs_table.py  the rich, filtered runs table  run_filter.py  its filter syntax
    summary.py     per-run metric summaries    names.py    readable default run names

One ``duckdb`` connection per ``Store`` guarded by a re-entrant lock, so the server may apply
events from several threads. Every write is one transaction (``apply_event`` commits per event),
so whatever a crashed process had committed -- e.g. the metrics of finished epochs -- is there
when the file is opened again (DuckDB replays its write-ahead log).

No SQL leaves this package: callers get entities from :mod:`workbench.store.entities`. Trained
weights are kept as opaque safetensors bytes; nothing here imports torch.
"""

from __future__ import annotations

from workbench.store.checkpoints import CheckpointsMixin
from workbench.store.connection import StoreConnection, StoreLockedError
from workbench.store.datasets import DatasetsMixin
from workbench.store.events import EventsMixin
from workbench.store.experiments import ExperimentsMixin
from workbench.store.imports import ImportsMixin
from workbench.store.keys import KeysMixin
from workbench.store.metrics import MetricsMixin
from workbench.store.models import ModelsMixin
from workbench.store.nodes import NodesMixin
from workbench.store.params import ParamsMixin, safetensors_data_bytes
from workbench.store.runs import RunsMixin
from workbench.store.runs_table import RunsTableMixin
from workbench.store.sql import SqlMixin

__all__ = ["Store", "StoreLockedError", "safetensors_data_bytes"]


class Store(
    StoreConnection,
    ModelsMixin,
    RunsMixin,
    RunsTableMixin,
    ExperimentsMixin,
    EventsMixin,
    ParamsMixin,
    MetricsMixin,
    SqlMixin,
    KeysMixin,
    NodesMixin,
    DatasetsMixin,
    CheckpointsMixin,
    ImportsMixin,
):
    """The workbench's DuckDB store. Thread-safe; use as a context manager or call close()."""
