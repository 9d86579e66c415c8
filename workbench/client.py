"""Python client for a running ``workbench serve`` (the MNIST MLP API under ``/api``).

    from workbench.client import Client
    with Client("http://127.0.0.1:8765", api_key) as wb:
        model = wb.create_model(architecture, {"epochs": 3})
        run = wb.train(model["model_id"])
        run = wb.wait(run["run_id"])                 # tqdm progress by epoch
        out = wb.infer(run["param_id"], x)           # x: (n, 784) array -> binary float32 body

Transient failures are retried with exponential backoff: connection errors always (the request
never reached the server), and for idempotent GETs also timeouts and 502/503/504/429.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import orjson

_RETRY_STATUS = {429, 502, 503, 504}
_TERMINAL = {"succeeded", "failed", "cancelled"}
# the datasets the MNIST MLP API's POST /api/models/{id}/train names; others: /api/v1/networks
MNIST_API_DATASETS = ("mnist", "fashion-mnist")


class ApiError(Exception):
    """A 4xx/5xx answer: ``status``, ``detail`` and the per-field ``errors``."""

    def __init__(self, status: int, detail: str, errors: Sequence[str] = ()):
        self.status, self.detail, self.errors = status, detail, list(errors)
        super().__init__(f"{status}: {detail}" + (f" ({'; '.join(errors)})" if errors else ""))


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 4, backoff: float = 0.25):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        transport = None
        if self.base_url.startswith("unix:"):  # an owner on a Unix socket (workbench.frontdoor)
            transport = httpx.HTTPTransport(uds=self.base_url[len("unix:"):])
            base_url = "http://workbench"
        # trust_env=False for local owners: an HTTP proxy from the environment must not relay
        # loopback or socket traffic.
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/api", headers=headers,
                                  timeout=timeout, transport=transport,
                                  trust_env=not _is_local(self.base_url))
        self.retries, self.backoff = retries, backoff

    # -- plumbing ----------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                 params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                 timeout: float | None = None, raw: bool = False) -> Any:
        if json is not None:
            content = orjson.dumps(json, option=orjson.OPT_SERIALIZE_NUMPY)
            headers = {"Content-Type": "application/json", **(headers or {})}
        idempotent = method == "GET"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(
                    method, path, content=content, params=params, headers=headers,
                    **({"timeout": timeout} if timeout is not None else {}))
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if last:
                    raise
            except httpx.TransportError:
                if last or not idempotent:
                    raise
            else:
                if response.status_code in _RETRY_STATUS and idempotent and not last:
                    pass
                elif response.status_code >= 400:
                    raise _api_error(response)
                else:
                    return response.content if raw else response.json()
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    # -- endpoints ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def create_model(self, architecture: dict[str, Any], hyperparams: dict[str, Any] | None = None,
                     *, name: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"architecture": architecture}
        if hyperparams is not None:
            body["hyperparams"] = hyperparams
        if name is not None:
            body["name"] = name
        if "input_shape" in architecture:  # the native spec (CNNs): not the MNIST MLP API's
            return self._request("POST", "/v1/networks", json=body)["data"]
        return self._request("POST", "/models", json=body)

    def get_model(self, model_id: str) -> dict[str, Any]:
        return self._request("GET", f"/models/{model_id}")

    def train(self, model_id: str, hyperparams: dict[str, Any] | None = None, *,
              dataset: str = "mnist", limit: int | None = None, device: str = "auto",
              target: str = "local", strategy: str = "single", world_size: int | None = None,
              cuda_graph: bool = True, offline: bool | None = None) -> dict[str, Any]:
        """Queue a run: ``{"run_id", "model_id", "status": "queued"}``. ``target``: local,
        local-kernel, distributed, ray or a node id; ``strategy`` ddp / pipeline with
        ``world_size`` ranks trains on torch.distributed. ``dataset``: mnist, fashion-mnist or
        (trained on the local target) any other dataset a run may name, by name or id
        (``GET /api/v1/datasets``)."""
        if dataset not in MNIST_API_DATASETS:
            return self._train_on_registered(model_id, hyperparams, dataset=dataset,
                                             limit=limit, device=device, target=target,
                                             strategy=strategy, cuda_graph=cuda_graph,
                                             offline=offline)
        body: dict[str, Any] = {"dataset": dataset, "device": device, "target": target}
        if strategy != "single":
            body["strategy"] = strategy
        if world_size is not None:
            body["world_size"] = world_size
        if not cuda_graph:
            body["cuda_graph"] = False
        if offline is not None:
            body["offline"] = offline
        if hyperparams is not None:
            body["hyperparams"] = hyperparams
        if limit is not None:
            body["limit"] = limit
        return self._request("POST", f"/models/{model_id}/train", json=body)

    # --- cnn20b: registered datasets (issue 20) ---
    def _train_on_registered(self, model_id: str, hyperparams: dict[str, Any] | None, *,
                             dataset: str, limit: int | None, device: str, target: str,
                             strategy: str, cuda_graph: bool, offline: bool | None
                             ) -> dict[str, Any]:
        """``POST /api/v1/networks/{id}/train``: the MNIST MLP API's train route takes only
        its two datasets; the native one takes the registry's (on the local target)."""
        if target != "local" or strategy != "single":
            raise ValueError(f"dataset {dataset!r}: a registered dataset trains on the local "
                             f"target only (got target {target!r}, strategy {strategy!r})")
        body: dict[str, Any] = {"dataset": dataset, "device": device}
        for key, value in (("hyperparams", hyperparams), ("limit", limit),
                           ("offline", offline)):
            if value is not None:
                body[key] = value
        if not cuda_graph:
            body["cuda_graph"] = False
        return self._request("POST", f"/v1/networks/{model_id}/train", json=body)["data"]

    def datasets(self) -> list[dict[str, Any]]:
        """Every dataset a run may name, with shape, classes and counts."""
        return self._request("GET", "/v1/datasets")["data"]

    def register_dataset(self, name: str, *, path: str | None = None, query: str | None = None,
                         label: str = "label") -> dict[str, Any]:
        """Register a CSV/Parquet/NPZ file or image folder by ``path`` (inside the owner's
        data roots), or a read-only DuckDB ``query`` over registered tables."""
        body: dict[str, Any] = {"name": name, "label": label}
        for key, value in (("path", path), ("query", query)):
            if value is not None:
                body[key] = value
        return self._request("POST", "/v1/datasets", json=body)["data"]
    # --- end cnn20b ---

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/runs/{run_id}")

    def runs(self, *, state: str | None = None, model_id: str | None = None, limit: int = 50,
             cursor: str | None = None) -> dict[str, Any]:
        """Runs of every model, newest first: ``{"items": [...], "next_cursor": ...}``."""
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("state", state), ("model_id", model_id), ("cursor", cursor)):
            if value is not None:
                params[key] = value
        return self._request("GET", "/runs", params=params)

    def runs_table(self, *, filter: str | None = None, sort: str = "-created_at",  # noqa: A002
                   columns: Sequence[str] | None = None, limit: int = 100, offset: int = 0
                   ) -> dict[str, Any]:
        """The rich runs table: ``{"columns", "items", "total", "next_offset"}``; ``filter``
        like ``val_accuracy > 0.9 and tag:baseline``, ``sort`` a column ('-' descending)."""
        params: dict[str, Any] = {"sort": sort, "limit": limit, "offset": offset}
        if filter:
            params["filter"] = filter
        if columns:
            params["columns"] = ",".join(columns)
        return self._request("GET", "/runs/table", params=params)

    def export_runs(self, fmt: str = "csv", *, filter: str | None = None,  # noqa: A002
                    sort: str = "-created_at", columns: Sequence[str] | None = None) -> bytes:
        """The runs table as CSV or Parquet bytes."""
        params: dict[str, Any] = {"format": fmt, "sort": sort}
        if filter:
            params["filter"] = filter
        if columns:
            params["columns"] = ",".join(columns)
        return self._request("GET", "/runs/export", params=params, raw=True)

    def update_run(self, run_id: str, **changes: Any) -> dict[str, Any]:
        """Rename / move / tag / annotate a run: ``name``, ``experiment``, ``tags``, ``notes``."""
        body = {k: v for k, v in changes.items() if v is not None}
        return self._request("PATCH", f"/runs/{run_id}", json=body)

    def compare_runs(self, run_ids: Sequence[str], *, metrics: Sequence[str] | None = None,
                     x: str = "epoch") -> dict[str, Any]:
        body: dict[str, Any] = {"run_ids": list(run_ids), "x": x}
        if metrics:
            body["metrics"] = list(metrics)
        return self._request("POST", "/runs/compare", json=body)

    def report(self, run_ids: Sequence[str], *, metrics: Sequence[str] | None = None,
               x: str = "epoch", title: str | None = None) -> str:
        """A self-contained HTML report of the runs."""
        body: dict[str, Any] = {"run_ids": list(run_ids), "x": x}
        if metrics:
            body["metrics"] = list(metrics)
        if title:
            body["title"] = title
        return self._request("POST", "/runs/report", json=body, raw=True).decode()

    def experiments(self) -> list[dict[str, Any]]:
        return self._request("GET", "/experiments")["items"]

    def create_experiment(self, name: str, description: str = "") -> dict[str, Any]:
        return self._request("POST", "/experiments",
                             json={"name": name, "description": description})

    def describe_experiment(self, name: str, description: str) -> dict[str, Any]:
        return self._request("PATCH", f"/experiments/{quote(name, safe='')}",
                             json={"description": description})

    def events(self, run_id: str, *, after: int = 0, wait: float = 0.0, limit: int = 1000
               ) -> dict[str, Any]:
        """Events with id > ``after`` (``{"events", "last_id", "state"}``); ``wait`` long-polls."""
        params = {"after": after, "wait": wait, "limit": limit}
        return self._request("GET", f"/runs/{run_id}/events", params=params,
                             timeout=wait + self._http.timeout.read if wait else None)

    def follow(self, run_id: str, *, after: int = 0, wait: float = 20.0
               ) -> Iterator[dict[str, Any]]:
        """Every event of a run from id ``after`` on, as it happens, until the run ends.
        A dropped request is retried with the last id seen, so nothing is lost; after
        ``retries`` failures in a row the ``httpx.TransportError`` is raised (the server is
        gone: a caller may find the new owner and follow on from the last event's ``id``)."""
        failures = 0
        while True:
            try:
                page = self.events(run_id, after=after, wait=wait)
            except (httpx.TransportError, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status < 500:
                    raise
                failures += 1
                if failures > self.retries:
                    raise
                time.sleep(self.backoff * 2**failures)
                continue
            failures = 0
            yield from page["events"]
            after = page["last_id"]
            if not page["events"] and page["state"] in _TERMINAL:
                return

    def sql(self, query: str, *, limit: int = 1000) -> dict[str, Any]:
        """Read-only SQL over the store's views: ``{"columns", "rows", "truncated"}``."""
        return self.v1("POST", "/sql", json={"query": query, "limit": limit})

    def v1_all(self, path: str, **params: Any) -> list[Any]:
        """Every item of a paged ``/api/v1`` list (``GET path?page=N``), in order."""
        items: list[Any] = []
        page = 1
        while True:
            body = self._request("GET", "/v1" + path, params={**params, "page": page,
                                                               "limit": 100})
            data = body["data"]
            # Neurogrid lists wrap their items: {"nodes": [...], "total": ...}.
            items += data if isinstance(data, list) else next(
                v for v in data.values() if isinstance(v, list))
            pages = ((body.get("meta") or {}).get("pagination") or {}).get("pages") or 1
            if page >= pages:
                return items
            page += 1

    def v1(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call to the native ``/api/v1`` API; returns the envelope's ``data``."""
        return self._request(method, "/v1" + path, **kwargs)["data"]

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._request("POST", f"/runs/{run_id}/cancel")

    def pause(self, run_id: str) -> dict[str, Any]:
        """Ask a run to checkpoint at the end of its epoch and stop ``paused``."""
        return self._request("POST", f"/runs/{run_id}/pause")

    def resume(self, run_id: str, *, target: str | None = None) -> dict[str, Any]:
        """Queue a paused run again from its last checkpoint (on ``target`` to move it)."""
        return self._request("POST", f"/runs/{run_id}/resume",
                             json={"target": target} if target else {})

    def export_bundle(self, run_id: str) -> bytes:
        """The run as one portable bundle file (zip; see ``workbench.service.bundles``)."""
        return self._request("GET", f"/runs/{run_id}/bundle", raw=True)

    def rerun_bundle(self, bundle: bytes, *, target: str = "local") -> dict[str, Any]:
        """Train a bundle's run again: ``{"original_run_id", "run": {...}}``."""
        return self._request("POST", "/bundles/rerun", content=bundle, params={"target": target},
                             headers={"Content-Type": "application/zip"})

    def import_bundle(self, bundle: bytes) -> dict[str, Any]:
        """Store a bundle's run in this home: ``{"run_id", "model_id", "param_id"}``."""
        return self._request("POST", "/bundles", content=bundle,
                             headers={"Content-Type": "application/zip"})

    def list_runs(self, model_id: str, *, limit: int = 20, cursor: str | None = None
                  ) -> dict[str, Any]:
        """One page: ``{"items": [...], "next_cursor": str | None}``."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", f"/models/{model_id}/runs", params=params)

    def iter_runs(self, model_id: str, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.list_runs(model_id, limit=page_size, cursor=cursor)
            yield from page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def wait(self, run_id: str, *, timeout: float | None = None, poll: float = 0.25,
             progress: bool = True) -> dict[str, Any]:
        """Poll until the run is terminal (TimeoutError after ``timeout`` s); shows a tqdm bar
        by epoch. Returns the final run."""
        from tqdm.auto import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                run = self.get_run(run_id)
                if progress:
                    if bar is None:
                        bar = tqdm(total=run["epochs_total"], unit="epoch", desc=run_id[:10])
                    bar.total = run["epochs_total"]
                    bar.n = run["epoch"]
                    val = run["metrics"].get("val_accuracy")
                    bar.set_postfix(state=run["state"],
                                    val_acc="-" if val is None else f"{val:.4f}")
                if run["state"] in _TERMINAL:
                    return run
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"run {run_id} still {run['state']} after {timeout} s")
                time.sleep(poll)
        finally:
            if bar is not None:
                bar.close()

    # -- sweeps (workbench.sweeps) -------------------------------------------------------------
    def sweep(self, spec: dict[str, Any], *, wait: bool = False, timeout: float | None = None,
              progress: bool = True) -> dict[str, Any]:
        """Start a sweep (``workbench.sweeps.spec``); with ``wait``, follow it to the end."""
        sweep = self._request("POST", "/sweeps", json=spec)
        if wait:
            return self.wait_sweep(sweep["sweep_id"], timeout=timeout, progress=progress)
        return sweep

    def sweeps(self) -> list[dict[str, Any]]:
        """Every sweep, newest first (state, trial counts, best so far)."""
        return self._request("GET", "/sweeps")["items"]

    def get_sweep(self, sweep_id: str, *, importance: bool = False) -> dict[str, Any]:
        """One sweep with every trial (and fANOVA parameter importances)."""
        return self._request("GET", f"/sweeps/{sweep_id}",
                             params={"importance": "true"} if importance else None)

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._request("POST", f"/sweeps/{sweep_id}/cancel")

    def wait_sweep(self, sweep_id: str, *, timeout: float | None = None, poll: float = 1.0,
                   progress: bool = True) -> dict[str, Any]:
        """Poll until the sweep has ended (TimeoutError after ``timeout`` s); a tqdm bar of
        trials done, with pruned, failed and the best value so far. Returns the sweep."""
        from tqdm.auto import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                sweep = self.get_sweep(sweep_id)
                counts = sweep["counts"]
                if progress:
                    if bar is None:
                        bar = tqdm(total=sweep["budget_trials"], unit="trial",
                                   desc=sweep["name"][:20])
                    bar.n = counts["complete"] + counts["pruned"] + counts["failed"]
                    best = sweep["best"]
                    bar.set_postfix(running=counts["running"], pruned=counts["pruned"],
                                    failed=counts["failed"],
                                    best="-" if best is None else f"{best['value']:.4g}")
                if sweep["state"] != "running":
                    return sweep
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"sweep {sweep_id} still running after {timeout} s")
                time.sleep(poll)
        finally:
            if bar is not None:
                bar.close()

    # -- external runs (workbench.track) ------------------------------------------------------
    def create_run(self, name: str, *, experiment: str = "default",
                   config: dict[str, Any] | None = None, tags: Sequence[str] = (),
                   device: str | None = None) -> dict[str, Any]:
        """Start tracking a run trained elsewhere: the run (``running``, target ``external``)
        with its name, experiment, tags and config."""
        body: dict[str, Any] = {"name": name, "experiment": experiment,
                                "config": dict(config or {}), "tags": list(tags)}
        if device is not None:
            body["device"] = device
        return self._request("POST", "/runs", json=body)

    def log_batch(self, run_id: str, metrics: Sequence[dict[str, Any]] | None = None, *,
                  batch_id: str | None = None, columns: dict[str, list[Any]] | None = None
                  ) -> dict[str, Any]:
        """Store up to 10,000 points ``{"key", "value", "step", "timestamp"?, "epoch"?}`` of an
        external run (or the same as ``columns``: equal-length lists per field). With a
        ``batch_id`` a retried batch is stored once (the answer says ``"duplicate": true``).
        Returns ``{"accepted", "duplicate", "event_id", ...}``."""
        body: dict[str, Any] = ({"columns": columns} if columns is not None
                                else {"metrics": list(metrics or ())})
        if batch_id is not None:
            body["batch_id"] = batch_id
        return self._request("POST", f"/runs/{run_id}/log-batch", json=body)

    def finish_run(self, run_id: str, state: str = "succeeded", *, error: str | None = None
                   ) -> dict[str, Any]:
        """End an external run: succeeded, failed (with ``error``) or cancelled."""
        body: dict[str, Any] = {"state": state}
        if error is not None:
            body["error"] = error
        return self._request("POST", f"/runs/{run_id}/finish", json=body)

    def tracked_run(self, run_id: str) -> dict[str, Any]:
        """An external run with its name, experiment, tags and config."""
        return self._request("GET", f"/runs/{run_id}/tracking")

    def metrics(self, run_id: str, *, names: Sequence[str] | None = None,
                limit: int = 10_000) -> list[dict[str, Any]]:
        """A run's long-form metric rows ``{"epoch", "step", "name", "value", "time"}`` (read
        through the SQL views, at most 10,000), ordered by name, step, time."""
        where = "run_id = " + _sql_string(run_id)
        if names:
            where += " AND name IN (" + ", ".join(_sql_string(n) for n in names) + ")"
        result = self.sql("SELECT epoch, step, name, value, time FROM metrics WHERE "
                          f"{where} ORDER BY name, step, time", limit=limit)
        return [dict(zip(result["columns"], row)) for row in result["rows"]]

    def params(self, param_id: str) -> dict[str, Any]:
        return self._request("GET", f"/params/{param_id}")

    def infer(self, param_id: str, inputs: Any, *, logits: bool = False,
              probabilities: bool = True, labels: bool = True, binary: bool | None = None
              ) -> dict[str, Any]:
        """Run a trained model. A numpy array goes as a raw float32 body (fast) unless
        ``binary=False``; lists go as JSON."""
        if binary is None:
            binary = isinstance(inputs, np.ndarray)
        if binary:
            x = np.ascontiguousarray(np.asarray(inputs, dtype="<f4"))
            if x.ndim != 2:
                raise ValueError(f"inputs: expected a 2-D batch, got shape {x.shape}")
            params = {"param_id": param_id, "shape": f"{x.shape[0]},{x.shape[1]}",
                      "logits": logits, "probabilities": probabilities, "labels": labels}
            return self._request("POST", "/infer", content=x.tobytes(), params=params,
                                 headers={"Content-Type": "application/octet-stream"})
        body = {"param_id": param_id, "inputs": inputs,
                "return": {"logits": logits, "probabilities": probabilities, "labels": labels}}
        return self._request("POST", "/infer", json=body)

    def infer_adhoc(self, architecture: dict[str, Any], parameters: dict[str, Any], inputs: Any,
                    *, logits: bool = False, probabilities: bool = True, labels: bool = True
                    ) -> dict[str, Any]:
        body = {"architecture": architecture, "parameters": parameters, "inputs": inputs,
                "return": {"logits": logits, "probabilities": probabilities, "labels": labels}}
        return self._request("POST", "/infer_adhoc", json=body)


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        return ApiError(response.status_code, response.text[:500])
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # the /api/v1 envelope
        return ApiError(response.status_code, str(body["error"].get("message")))
    if isinstance(body, dict) and "detail" in body:
        return ApiError(response.status_code, str(body.get("detail")), body.get("errors") or [])
    return ApiError(response.status_code, str(body)[:500])


def _is_local(url: str) -> bool:
    from urllib.parse import urlsplit

    return url.startswith("unix:") or urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
