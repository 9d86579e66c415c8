"""``Watch``: hooks on a torch module that log achieved TFLOPS and per-layer norms.

A *step* is one forward of the watched module in training mode (``module.training``), seen by
a forward pre-hook: the time from one to the next is the time of a whole training step (data,
forward, backward, optimizer). On the first step ``torch.utils.flop_counter.FlopCounterMode``
is entered, and left at the second: the FLOPs of one forward + backward (matmuls,
convolutions, attention: what the counter knows). From then on every ``log_every`` steps:

- ``perf/step_time_s``     mean wall time of a step over the window
- ``perf/tflops``          ``perf/flops_per_step`` / step time / 1e12 (achieved, end to end)
- ``grad_norm/<param>``, ``weight_norm/<param>``   L2 norms per parameter, taken right after
  its gradient is accumulated (``register_post_accumulate_grad_hook``) on the first step of
  each window; the norms stay tensors until the flush thread reads them, so the training
  thread never waits for the GPU.

A model called several times per step counts each training-mode call as a step.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import Any

log = logging.getLogger("workbench.track")


class Watch:
    def __init__(self, run: Any, model: Any, *, log_every: int = 100, flops: bool = True,
                 norms: bool = True):
        import torch

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"watch: expected a torch.nn.Module, got {type(model).__name__}")
        self.run = run
        self.model = model
        self.log_every = max(1, int(log_every))
        self.flops = flops
        self.flops_per_step: int | None = None
        self.steps = 0
        self._flop_mode: Any = None
        self._window_start: float | None = None
        self._window_steps = 0
        self._norm_step = False
        self._norms: dict[str, Any] = {}
        self._handles: list[Any] = [model.register_forward_pre_hook(self._pre_forward)]
        if norms:
            for name, param in model.named_parameters():
                if param.requires_grad and hasattr(param, "register_post_accumulate_grad_hook"):
                    self._handles.append(param.register_post_accumulate_grad_hook(
                        functools.partial(self._grad_ready, name)))

    # ---- hooks (the training thread) ------------------------------------------------------
    def _pre_forward(self, module: Any, args: Any) -> None:
        if not module.training:
            return
        now = time.perf_counter()
        self.steps += 1
        if self._norms:
            self.run.log_at(self._norms)
            self._norms = {}
        if self.steps == 1:
            if self.flops:
                self._start_counting()
        elif self.steps == 2:
            self._stop_counting()
            self._window_start, self._window_steps = now, 0  # step 1 ran under the counter
        else:
            self._window_steps += 1
            if self._window_steps >= self.log_every and self._window_start is not None:
                step_time = (now - self._window_start) / self._window_steps
                out: dict[str, float] = {"perf/step_time_s": step_time}
                if self.flops_per_step and step_time > 0:
                    out["perf/tflops"] = self.flops_per_step / step_time / 1e12
                self.run.log_at(out)
                self._window_start, self._window_steps = now, 0
        self._norm_step = (self.steps - 1) % self.log_every == 0

    def _grad_ready(self, name: str, param: Any) -> None:
        if not self._norm_step or param.grad is None:
            return
        self._norms[f"grad_norm/{name}"] = param.grad.detach().norm()
        self._norms[f"weight_norm/{name}"] = param.detach().norm()

    # ---- FLOPs ------------------------------------------------------------------------------
    def _start_counting(self) -> None:
        try:
            from torch.utils.flop_counter import FlopCounterMode

            mode = FlopCounterMode(display=False)
            mode.__enter__()
            self._flop_mode = mode
        except Exception as exc:  # an old torch, or a mode already active
            log.warning("workbench.track.watch: cannot count FLOPs (%s)", exc)
            self._flop_mode = None

    def _stop_counting(self) -> None:
        mode, self._flop_mode = self._flop_mode, None
        if mode is None:
            return
        try:
            mode.__exit__(None, None, None)
            self.flops_per_step = int(mode.get_total_flops())
        except Exception as exc:
            log.warning("workbench.track.watch: counting FLOPs failed (%s)", exc)
            return
        self.run.log_at({"perf/flops_per_step": float(self.flops_per_step)})

    def remove(self) -> None:
        """Take the hooks off (``finish`` does it); logs the norms still pending."""
        self._stop_counting()
        if self._norms:
            self.run.log_at(self._norms)
            self._norms = {}
        for handle in self._handles:
            with contextlib.suppress(Exception):
                handle.remove()
        self._handles = []

    def __repr__(self) -> str:
        return f"Watch(steps={self.steps}, flops_per_step={self.flops_per_step})"
