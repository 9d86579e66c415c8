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

import httpx
import numpy as np
import orjson

_RETRY_STATUS = {429, 502, 503, 504}
_TERMINAL = {"succeeded", "failed", "cancelled"}


class ApiError(Exception):
    """A 4xx/5xx answer: ``status``, ``detail`` and the per-field ``errors``."""

    def __init__(self, status: int, detail: str, errors: Sequence[str] = ()):
        self.status, self.detail, self.errors = status, detail, list(errors)
        super().__init__(f"{status}: {detail}" + (f" ({'; '.join(errors)})" if errors else ""))


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 4, backoff: float = 0.25):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/api", headers=headers,
                                  timeout=timeout)
        self.retries, self.backoff = retries, backoff

    # -- plumbing ----------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                 params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
                 ) -> Any:
        if json is not None:
            content = orjson.dumps(json, option=orjson.OPT_SERIALIZE_NUMPY)
            headers = {"Content-Type": "application/json", **(headers or {})}
        idempotent = method == "GET"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, content=content, params=params,
                                              headers=headers)
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
                    return response.json()
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
        return self._request("POST", "/models", json=body)

    def get_model(self, model_id: str) -> dict[str, Any]:
        return self._request("GET", f"/models/{model_id}")

    def train(self, model_id: str, hyperparams: dict[str, Any] | None = None, *,
              dataset: str = "mnist", limit: int | None = None, device: str = "auto",
              target: str = "local", strategy: str = "single", world_size: int | None = None,
              ) -> dict[str, Any]:
        """Queue a run: ``{"run_id", "model_id", "status": "queued"}``. ``target``: local,
        local-kernel, distributed or a node id; ``strategy`` ddp / pipeline with
        ``world_size`` ranks trains on torch.distributed."""
        body: dict[str, Any] = {"dataset": dataset, "device": device, "target": target}
        if strategy != "single":
            body["strategy"] = strategy
        if world_size is not None:
            body["world_size"] = world_size
        if hyperparams is not None:
            body["hyperparams"] = hyperparams
        if limit is not None:
            body["limit"] = limit
        return self._request("POST", f"/models/{model_id}/train", json=body)

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/runs/{run_id}")

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._request("POST", f"/runs/{run_id}/cancel")

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
        return ApiError(response.status_code, str(body.get("detail")), body.get("errors") or [])
    except ValueError:
        return ApiError(response.status_code, response.text[:500])
