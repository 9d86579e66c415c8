"""The training loop: flat, readable top to bottom.

Data sits on the training device as two tensors; a batch is a slice of a seeded permutation
(no per-sample Dataset/DataLoader on the hot path). Loss and accuracy accumulate on the device
and are read once per epoch, so there is no host sync between steps. Progress goes out as
events (``workbench.events``) to a sink.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import events as ev
from ..model import build_model, encode_weights, load_weights, logits_module, model_cost
from ..spec import Hyperparams, Network
from .checkpoint import Checkpoint, capture, restore
from .early_stopping import EarlyStopping
from .mlp_step import MlpStep
from .optim import Impl, make_optimizer, optimizer_impl
from .steps import EagerStep, GraphedStep
from .timing import peak_memory_bytes, phase_timer
from .utilisation import utilisation

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    cuda_graph: bool = True  # capture the step in CUDA graphs (CUDA only); False = eager
    step_events_per_epoch: int = 20  # sampled step-loss points (each read costs nothing extra)
    eval_batch_size: int = 8192  # evaluation is forward-only, so big batches are fine
    freeze: tuple[int, ...] = ()  # spec indices of linear layers whose weights stay fixed
    initial_weights: dict[str, torch.Tensor] | None = None  # start from these (fine-tuning)
    include_weights_in_event: bool = True  # run.completed carries base64 safetensors
    # auto | fused | foreach | single_tensor: which torch optimizer implementation to run
    # (auto = fused where the device/dtype has it, else foreach, else single_tensor).
    optimizer_impl: Impl = "auto"
    # auto: a dense MLP on the CPU runs its backward written out (train.mlp_step), anything
    # else through autograd; autograd: always autograd (EagerStep).
    step_impl: Literal["auto", "autograd"] = "auto"
    # Checkpoints (workbench.train.checkpoint): a ``checkpoint`` event every N epochs (0: only
    # when pausing), and the checkpoint a resumed run continues from (epochs keep numbering).
    checkpoint_every: int = 0
    resume_from: Checkpoint | None = None
    # conv weights (and so activations) in channels_last; None = for conv nets on the CPU,
    # where it measured 1.15-1.25x the samples/s (benchmarks/cnn_throughput.py)
    channels_last: bool | None = None


@dataclass
class TrainResult:
    run_id: str
    model: nn.Sequential  # trained, on CPU
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per epoch
    stopped_early: bool = False
    cancelled: bool = False
    paused: bool = False  # ended by a pause (a checkpoint was sent just before)
    device: str = "cpu"
    optimizer_impl: str = "single_tensor"  # the implementation that ran (optim.optimizer_impl)
    step_impl: str = "autograd"  # what ran each step: mlp, autograd or cuda_graph

    @property
    def final_metrics(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but CUDA is not available here")
    return device


@torch.no_grad()
def evaluate(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, correct count) as device tensors: the caller decides when to
    sync."""
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, x.shape[0], batch_size):
        logits = net(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    return loss_sum, correct


def train(
    architecture: Network,
    hyperparams: Hyperparams,
    splits: Any,
    *,
    run_id: str = "r_local",
    sink: ev.Sink | None = None,
    should_stop: Callable[[], bool] | None = None,
    options: TrainOptions | None = None,
    should_pause: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``architecture`` on ``splits`` (a ``workbench.data.Splits``); emits events to
    ``sink``; returns the trained model and per-epoch history. Any exception is reported as a
    ``run.failed`` event and re-raised. ``should_pause`` is asked at the end of each epoch: when
    it says so, the run checkpoints and ends with ``run.paused``."""
    sink = sink or ev.null_sink
    try:
        return _train(architecture, hyperparams, splits, run_id, sink, should_stop, options,
                      should_pause or (lambda: False))
    except Exception as exc:
        sink(ev.make_event(ev.RUN_FAILED, run_id, error=f"{type(exc).__name__}: {exc}"))
        raise


def _train(architecture, hp, splits, run_id, sink, should_stop, options,
           should_pause) -> TrainResult:
    opts = options or TrainOptions()
    should_stop = should_stop or (lambda: False)
    device = resolve_device(opts.device)
    cost = model_cost(architecture)
    rng_devices = [device.index or 0] if device.type == "cuda" else []

    # Seed a private RNG scope so two runs with one seed match and callers' RNG is untouched.
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(hp.seed)
        model = build_model(architecture)
        if opts.initial_weights is not None:
            load_weights(model, opts.initial_weights)
        for index in opts.freeze:
            for p in model.get_submodule(str(index)).parameters():
                p.requires_grad_(False)
        model.to(device)
        if use_channels_last(architecture, device, opts.channels_last):
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        net = logits_module(model)  # a final softmax is folded into the loss
        data = splits.to(device)
        # (N, 784) float32, (N,) int64; a CNN's first module views rows as (N, C, H, W)
        x, y = data.x_train, data.y_train
        n = x.shape[0]
        if n == 0:
            raise ValueError("the training split is empty")
        batch_size = min(hp.batch_size, n)
        # A resumed run trains eagerly: its restored optimizer state would not be the tensors a
        # graph captured before the restore.
        use_graph = device.type == "cuda" and opts.cuda_graph and opts.resume_from is None
        trainable = [p for p in model.parameters() if p.requires_grad]
        impl = opts.optimizer_impl
        optimizer = make_optimizer(trainable, hp.optimizer, capturable=use_graph, impl=impl)
        step: EagerStep | GraphedStep | MlpStep = EagerStep(net, optimizer, device)
        if device.type == "cpu" and opts.step_impl == "auto" and (layers := MlpStep.plan(net)):
            step = MlpStep(layers, optimizer, device)
        if use_graph:
            try:
                step = GraphedStep(net, optimizer, device, batch_size, architecture.input_size)
            except Exception as exc:  # graphs are an optimisation: fall back, loudly
                log.warning("CUDA graph capture failed (%s); training eagerly", exc)
                use_graph = False
                optimizer = make_optimizer(trainable, hp.optimizer, impl=impl)
                step = EagerStep(net, optimizer, device)
        # A captured graph has a fixed batch size, so graphs drop the incomplete last batch.
        steps_per_epoch = n // batch_size if use_graph else math.ceil(n / batch_size)
        samples_per_epoch = steps_per_epoch * batch_size if use_graph else n
        sampled = _sampled_steps(steps_per_epoch, opts.step_events_per_epoch)
        step_losses = torch.zeros(len(sampled), device=device)
        timer = phase_timer(device)
        generator = torch.Generator().manual_seed(hp.seed)
        stopper, global_step = EarlyStopping(hp.early_stopping_patience, hp.min_delta), 0
        done = 0  # epochs finished before this execution (a resumed run continues after them)
        if opts.resume_from is not None:
            done, global_step = restore(opts.resume_from, model=model, optimizer=optimizer,
                                        generator=generator, device=device, stopper=stopper)

        sink(
            ev.make_event(
                ev.RUN_STARTED,
                run_id,
                device=str(device),
                device_name=_device_name(device),
                epochs_total=hp.epochs,
                n_train=n,
                n_val=int(data.x_val.shape[0]),
                batch_size=batch_size,
                cuda_graph=use_graph,
                step_impl=_step_impl(step),
                optimizer_impl=optimizer_impl(optimizer),
                flops_per_sample={"forward": cost.forward_flops, "backward": cost.backward_flops},
                params=cost.params,
                resumed_from_epoch=done or None,
            )
        )
        result = TrainResult(run_id=run_id, model=model, device=str(device),
                             optimizer_impl=optimizer_impl(optimizer),
                             step_impl=_step_impl(step))

        def checkpoint(epoch: int) -> None:
            saved = capture(model=model, optimizer=optimizer, generator=generator,
                            device=device, epoch=epoch, global_step=global_step,
                            stopper=stopper)
            sink(ev.make_event(ev.CHECKPOINT, run_id, epoch=epoch, state=saved.state,
                               tensors_safetensors_b64=saved.to_b64()))

        for epoch in range(done + 1, hp.epochs + 1):
            model.train()
            step.reset()
            t0 = time.perf_counter()
            perm = (
                torch.randperm(n, generator=generator) if hp.shuffle else torch.arange(n)
            ).to(device, non_blocking=True)
            sample_slot = 0
            for s in range(steps_per_epoch):
                if should_stop():
                    sink(ev.make_event(ev.RUN_CANCELLED, run_id, epoch=epoch, step=global_step))
                    result.cancelled = True
                    result.model = model.cpu()
                    return result
                idx = perm[s * batch_size : (s + 1) * batch_size]
                # index_select: a fifth of advanced indexing's cost for a batch gather
                step.run(x.index_select(0, idx), y.index_select(0, idx), timer)  # (B, 784), (B,)
                global_step += 1
                if sample_slot < len(sampled) and s == sampled[sample_slot]:
                    step_losses[sample_slot].copy_(step.last_loss.detach())
                    sample_slot += 1
            forward_s, backward_s = timer.collect()  # syncs the device once
            train_s = time.perf_counter() - t0

            model.eval()
            val_loss_sum, val_correct = evaluate(net, data.x_val, data.y_val, opts.eval_batch_size)
            stats = torch.stack(
                [step.loss_sum, step.correct.float(), val_loss_sum, val_correct.float()]
            ).tolist()  # the one host sync of the epoch
            n_val = data.x_val.shape[0]
            metrics = {
                "epoch": epoch,
                "step": global_step,
                "train_loss": stats[0] / samples_per_epoch,
                "train_accuracy": stats[1] / samples_per_epoch,
                "val_loss": stats[2] / n_val if n_val else None,
                "val_accuracy": stats[3] / n_val if n_val else None,
                "epoch_time_s": time.perf_counter() - t0,
                "samples_per_s": samples_per_epoch / train_s,
                "forward_tflops": _tflops(cost.forward_flops * samples_per_epoch, forward_s),
                "backward_tflops": _tflops(cost.backward_flops * samples_per_epoch, backward_s),
                "total_tflops": _tflops(cost.train_flops * samples_per_epoch, forward_s + backward_s),
                "forward_time_s": forward_s,
                "backward_time_s": backward_s,
                "peak_memory_bytes": peak_memory_bytes(device),
            }
            metrics.update(utilisation(device, metrics["total_tflops"]))
            first_step = global_step - steps_per_epoch
            for slot, loss in zip(sampled, step_losses.tolist()):
                sink(ev.make_event(ev.STEP, run_id, epoch=epoch, step=first_step + slot + 1, loss=loss))
            sink(ev.make_event(ev.EPOCH, run_id, **metrics))
            result.history.append(metrics)

            if stopper.update(metrics):
                result.stopped_early = True
                break
            if epoch < hp.epochs and should_pause():
                checkpoint(epoch)
                sink(ev.make_event(ev.RUN_PAUSED, run_id, epoch=epoch, step=global_step))
                result.paused = True
                result.model = model.cpu()
                return result
            if opts.checkpoint_every and epoch % opts.checkpoint_every == 0 and epoch < hp.epochs:
                checkpoint(epoch)

        result.model = model.cpu()
        completed: dict[str, Any] = {
            "epochs_run": done + len(result.history),
            "stopped_early": result.stopped_early,
            "metrics": result.final_metrics,
        }
        if opts.include_weights_in_event:
            completed["parameters_safetensors_b64"] = encode_weights(result.model)
            completed["size_bytes"] = 4 * cost.params
        sink(ev.make_event(ev.RUN_COMPLETED, run_id, **completed))
        return result


def use_channels_last(architecture: Network, device: torch.device, wanted: bool | None) -> bool:
    """Whether a run keeps its conv weights in channels_last (``TrainOptions.channels_last``)."""
    if wanted is not None:
        return wanted
    has_conv = any(layer.type == "conv2d" for layer in architecture.layers)
    return has_conv and device.type == "cpu"


def _step_impl(step: EagerStep | GraphedStep | MlpStep) -> str:
    """What runs a step, for the ``run.started`` event: cuda_graph, mlp or autograd."""
    if isinstance(step, GraphedStep):
        return "cuda_graph"
    return "mlp" if isinstance(step, MlpStep) else "autograd"


def _sampled_steps(steps: int, wanted: int) -> list[int]:
    """Evenly spaced step indices within an epoch, always including the last."""
    if wanted <= 0 or steps <= 0:
        return []
    count = min(wanted, steps)
    return sorted({round((i + 1) * steps / count) - 1 for i in range(count)})


def _tflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e12 if seconds > 0 else 0.0


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine() or "cpu"
