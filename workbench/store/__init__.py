"""Persistence: the DuckDB store of models, runs, metrics, trained parameters and events.

    from workbench.store import Store
    with Store() as store:                      # get_settings().db_path
        model = store.create_model(architecture={...}, hyperparams={...})
        run = store.create_run(model_id=model.model_id, hyperparams={...}, epochs_total=5)
        store.apply_event(event)                # the writer path for training events

Callers exchange entities (dataclasses), never rows; no SQL lives outside this package. The
one exception, ``store.query(sql)``, runs a user's read-only SELECT in a sandbox over the
``QUERYABLE_VIEWS`` (see :mod:`workbench.store.sandbox`).
"""

from workbench.store.duck import Store, StoreLockedError, safetensors_data_bytes
from workbench.store.entities import (
    RUN_STATES,
    TERMINAL_STATES,
    MetricRecord,
    ModelRecord,
    ParamRecord,
    RunRecord,
)
from workbench.store.keys import ApiKeyRecord
from workbench.store.migrations import LATEST_VERSION, MIGRATIONS, Migration, SchemaTooNewError
from workbench.store.nodes import NODE_STATUSES, NodeRecord
from workbench.store.run_filter import FilterError
from workbench.store.runs_table import RunsTable
from workbench.store.sandbox import VIEWS as QUERYABLE_VIEWS
from workbench.store.sql import QueryTimeoutError

__all__ = [
    "ApiKeyRecord",
    "FilterError",
    "LATEST_VERSION",
    "MIGRATIONS",
    "RUN_STATES",
    "TERMINAL_STATES",
    "MetricRecord",
    "Migration",
    "ModelRecord",
    "NODE_STATUSES",
    "NodeRecord",
    "ParamRecord",
    "QUERYABLE_VIEWS",
    "QueryTimeoutError",
    "RunRecord",
    "RunsTable",
    "SchemaTooNewError",
    "Store",
    "StoreLockedError",
    "safetensors_data_bytes",
]
