"""Shared app state: one ``AppState`` per session (browser tab or notebook), handed to every view.

Views bind to these parameters instead of to each other, so the builder, the launch panel, the
live run view, the runs table and the playground stay independent components.
"""

from __future__ import annotations

import threading
from typing import Any

import param

from .. import peaks
from ..data.datasets import DATASETS, expected_train_samples
from ..devices import available_devices


def known_peak(device: str) -> float | None:
    """The stored peak of ``device`` if it was ever measured, else None (never blocks)."""
    record = peaks.stored(device)
    return record.tflops if record is not None else None


def peak(device: str) -> float:
    """The stored peak of ``device`` (``workbench.peaks``), probing once per process."""
    return peaks.peak(device)


def prewarm_peaks() -> threading.Thread:
    """Measure every local device's peak in a background thread (started with the server)."""

    def run() -> None:
        for device in available_devices():
            try:
                peak(device)
            except (RuntimeError, ValueError):  # a broken device must not stop the server
                pass

    thread = threading.Thread(target=run, name="workbench-peak-probe", daemon=True)
    thread.start()
    return thread

# Where a prediction's sample count came from, as the Build tab says it.
SAMPLE_SOURCES = {"local-dir": "", "cache": "", "registry": "",
                  "bundled-subset": " (the bundled subset)", "download": " once downloaded"}


class AppState(param.Parameterized):
    """What the session is looking at and working on."""

    service = param.Parameter(doc="the workbench.service.Workbench every view calls")
    dataset = param.Selector(default="mnist", objects=list(DATASETS), doc="chosen data set")
    device = param.Selector(
        default="cpu", objects=["cpu"], doc="device of a local run (cpu, cuda:0, ...)"
    )
    peak_tflops = param.Number(
        default=None, allow_None=True, bounds=(0, None),
        doc="measured float32 matmul TFLOPS of the chosen device",
    )
    train_samples = param.Integer(
        default=54_000, bounds=(1, None), doc="training samples per epoch (for predictions)"
    )
    samples_source = param.String(
        default="download", doc="where train_samples came from (a SAMPLE_SOURCES key)")
    architecture = param.Dict(
        default=None, allow_None=True, doc="the builder's architecture JSON when it is valid"
    )
    run_id = param.String(default=None, allow_None=True, doc="the run shown in the live view")
    runs_changed = param.Event(doc="a run was created or finished: tables should refresh")
    defer_peak = param.Boolean(
        default=False, doc="served sessions: read the pre-measured peak, never measure inline"
    )
    authorize = param.Callable(
        default=None, allow_None=True,
        doc="scope -> whether this session's API key allows it, asked at each action (the "
            "REST policy's check); None: an in-process app (a notebook's own service)")
    # --- cnn20b: native networks and registered datasets (issue 20) ---
    network = param.Dict(
        default=None, allow_None=True, doc="the network builder's native spec when it is valid"
    )
    build_mode = param.Selector(default="mlp", objects=["mlp", "network"],
                                doc="which builder's architecture a launch trains")
    # --- end cnn20b ---

    def __init__(self, **params: Any):
        devices = available_devices()
        super().__init__(**params)
        self.param.device.objects = devices
        if "device" not in params:
            self.device = devices[-1]  # a GPU when there is one
        self._datasets: dict[str, dict[str, Any]] = {}  # the registry's entries, by name
        self.refresh_datasets()
        self._measure_peak()

    def may(self, scope: str) -> bool:
        """Whether this session may do what needs ``scope`` (read, train, admin), the same
        scopes the REST routes declare (``workbench.api.policy``)."""
        return self.authorize is None or bool(self.authorize(scope))

    @property
    def num_classes(self) -> int:
        return len(self.dataset_info().get("classes") or DATASETS["mnist"].classes)

    # --- cnn20b: the dataset picker's choices (issue 20) ---
    def refresh_datasets(self) -> None:
        """Offer every dataset a run may name (built-ins, bundled tables, the registry)."""
        if self.service is None or not hasattr(self.service, "list_datasets"):
            return
        self._datasets = {d["name"]: d for d in self.service.list_datasets()}
        self.param.dataset.objects = list(dict.fromkeys([*DATASETS, *self._datasets]))

    def dataset_info(self, name: str | None = None) -> dict[str, Any]:
        """``{"input_shape", "classes", ...}`` of ``name`` (default: the chosen dataset); a
        bundled table is registered (described) on first use."""
        name = name or self.dataset
        if name in DATASETS and name not in self._datasets:
            return {"name": name, "input_shape": [1, 28, 28],
                    "classes": list(DATASETS[name].classes)}
        info = self._datasets.get(name) or {}
        if not info.get("classes") and self.service is not None:
            info = self.service.get_dataset(name)
            self._datasets[name] = info
        return info

    def full_train_samples(self) -> tuple[int | None, str]:
        """Training samples (before the validation split) a run on the chosen dataset reads
        now, and from where: the files on this machine, the bundled subset when offline, or
        the registry's count of a user's dataset."""
        if self.dataset in DATASETS:
            return expected_train_samples(self.dataset)
        return self.dataset_info().get("n_samples"), "registry"

    def launch_architecture(self) -> dict[str, Any] | None:
        """What a launch trains: the network builder's spec or the MLP builder's architecture
        (in the native form for a dataset other than MNIST's ten classes)."""
        from ..netspec import as_netspec_json

        if self.build_mode == "network":
            return self.network
        if self.architecture is None or self.dataset in DATASETS:
            return self.architecture
        return as_netspec_json(self.architecture)
    # --- end cnn20b ---

    @param.depends("device", watch=True)
    def _measure_peak(self) -> None:
        self.peak_tflops = known_peak(self.device) if self.defer_peak else peak(self.device)

    def refresh_peak(self) -> bool:
        """Pick up a peak measured in the background since; True once it is known."""
        if self.peak_tflops is None:
            self.peak_tflops = known_peak(self.device)
        return self.peak_tflops is not None
