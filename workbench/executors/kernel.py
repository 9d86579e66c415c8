"""``LocalKernelExecutor``: train in a fresh local Jupyter kernel (ipykernel via jupyter_client).

Each run gets its own kernel, started with the server's own Python (or ``python=``), so a run's
imports, threads and memory never leak into the next one. The kernel runs
:func:`workbench.executors.kernel_protocol.kernel_code`; its events stream back live over iopub.

    executor = LocalKernelExecutor()
    handle = executor.submit(spec, sink=store.apply_event)
    handle.cancel()   # interrupts the kernel -> run.cancelled
    handle.join()

A kernel that dies mid-run ends the run as ``run.failed`` ("the kernel died ..."), keeping the
epochs already delivered; a kernel whose Python lacks workbench fails with how to install it.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import tempfile
import threading
from pathlib import Path

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from ..events import Sink
from ..train.job import RunSpec
from .kernel_protocol import KernelDied, KernelRun, KernelRunHandle, LiveRuns, kernel_code

log = logging.getLogger(__name__)

_SPEC_NAME = "nn-workbench-python"
_POLL_S = 0.5  # how often a quiet run checks that its kernel is still alive


class LocalKernelExecutor:
    """Runs each spec in its own local ipykernel; see the module docstring."""

    kind = "local-kernel"

    def __init__(
        self,
        *,
        python: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        startup_timeout: float = 60.0,
    ):
        self.python = python or sys.executable
        self.env = env  # None: the kernel inherits this process's environment
        self.startup_timeout = startup_timeout
        self._specs_dir = tempfile.TemporaryDirectory(prefix="workbench-kernelspec-")
        self._spec_manager = _kernelspec_manager(Path(self._specs_dir.name), self.python)
        # A scratch working directory: the kernel imports workbench from its installation,
        # never from whatever checkout the server happens to run in.
        self.cwd = cwd or self._specs_dir.name
        self._lock = threading.Lock()
        self._live = LiveRuns()
        self._kernels: dict[str, KernelManager] = {}

    # -- Executor -------------------------------------------------------------------------------

    def submit(self, spec: RunSpec, sink: Sink) -> KernelRunHandle:
        run = KernelRun(spec.run_id, sink)
        box: dict[str, KernelManager] = {}

        def interrupt() -> None:
            km = box.get("km")
            if km is not None and km.has_kernel:
                km.interrupt_kernel()

        handle = self._live.add(KernelRunHandle(run, interrupt))
        return handle.start(lambda: self._work(spec, run, box), name=f"kernel-{spec.run_id}")

    def close(self) -> None:
        """Cancel live runs and shut their kernels down."""
        self._live.close()
        self._specs_dir.cleanup()

    def live_runs(self) -> list[str]:
        return self._live.ids()

    def kernel_pid(self, run_id: str) -> int | None:
        """The process id of the kernel running ``run_id`` (None once it ended)."""
        with self._lock:
            km = self._kernels.get(run_id)
        process = getattr(km.provisioner, "process", None) if km is not None else None
        return getattr(process, "pid", None)

    # -- one run --------------------------------------------------------------------------------

    def _work(self, spec: RunSpec, run: KernelRun, box: dict[str, KernelManager]) -> None:
        km = KernelManager(
            kernel_name=_SPEC_NAME, kernel_spec_manager=self._spec_manager,
            # Unix sockets next to an absolute connection file: private to this machine (no TCP
            # port to guard) and independent of the kernel's working directory.
            transport="ipc",
            connection_file=str(Path(self._specs_dir.name) / f"kernel-{spec.run_id}.json"),
        )
        try:
            try:
                extra = {"env": self.env} if self.env is not None else {}
                km.start_kernel(cwd=self.cwd, **extra)
            except Exception as exc:
                run.fail(f"could not start a Jupyter kernel with {self.python}: {exc}")
                return
            box["km"] = km
            with self._lock:
                self._kernels[spec.run_id] = km
            kc = km.client()
            kc.start_channels()
            try:
                kc.wait_for_ready(timeout=self.startup_timeout)
            except RuntimeError as exc:
                run.fail(f"the Jupyter kernel did not become ready: {exc}")
                return
            if run.cancel_requested.is_set():  # cancelled while the kernel was starting
                run.cancelled()
                return
            run.msg_id = kc.execute(kernel_code(spec), store_history=False, silent=False)
            self._stream(km, kc, run)
            kc.stop_channels()
        finally:
            _shutdown(km)
            self._live.discard(spec.run_id)
            with self._lock:
                self._kernels.pop(spec.run_id, None)

    @staticmethod
    def _stream(km: KernelManager, kc, run: KernelRun) -> None:
        while True:
            try:
                msg = kc.get_iopub_msg(timeout=_POLL_S)
            except queue.Empty:
                if km.is_alive():
                    continue
                _drain(kc, run)  # events the kernel sent just before it died
                run.fail(f"the kernel died (exit code {_exit_code(km)}); {run.epochs_note()}")
                return
            try:
                if run.on_iopub(msg):
                    return
            except KernelDied as exc:
                run.fail(f"{exc}; {run.epochs_note()}")
                return


def _drain(kc, run: KernelRun) -> None:
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            return
        try:
            if run.on_iopub(msg):
                return
        except KernelDied:
            return


def _exit_code(km: KernelManager) -> int | str:
    process = getattr(km.provisioner, "process", None)
    code = process.poll() if process is not None else None
    return "unknown" if code is None else code


def _shutdown(km: KernelManager) -> None:
    try:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    except Exception as exc:  # already dead, or half-started
        log.debug("kernel shutdown: %s", exc)
    try:
        km.cleanup_resources()
    except Exception:
        pass


def _kernelspec_manager(directory: Path, python: str) -> KernelSpecManager:
    """A kernelspec that launches ipykernel with exactly ``python`` (not whatever ``python`` is on
    PATH), visible only to this executor."""
    spec_dir = directory / _SPEC_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"nn-workbench ({python})",
                "language": "python",
                "interrupt_mode": "signal",
            }
        )
    )
    return KernelSpecManager(kernel_dirs=[str(directory)])
