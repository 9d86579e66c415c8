"""Data-parallel training: every rank holds the whole model, each takes a slice of every batch.

``DistributedDataParallel`` averages gradients over the ranks. Each rank's loss is its slice's
*summed* cross-entropy times ``W / B`` (``W`` ranks, ``B`` samples in the global batch), so the
averaged gradient is that of the global batch-mean loss even when slices differ in size (a short
last batch): the same update as the single-process engine, same batches in the same order.

``should_stop`` (asked on rank 0 at the end of each epoch, the ranks' one sync point) ends
every rank there and the run with ``run.cancelled``: Ray Train's workers stop this way; local
and worker ranks are stopped by their coordinator instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import events as ev
from ..model import build_model, encode_weights, load_weights, logits_module, model_cost
from ..train.early_stopping import EarlyStopping
from ..train.engine import evaluate
from ..train.job import score_on_test_split
from ..train.optim import make_optimizer
from .common import (
    BatchOrder,
    ComputeTimer,
    device_report,
    emit_steps,
    epoch_metrics,
    sampled_steps,
)
from .job import DistJob


def train_ddp(job: DistJob, rank: int, splits: Any, device: torch.device, sink: ev.Sink,
              should_stop: Callable[[], bool] | None = None) -> nn.Sequential | None:
    """Train this rank's replica for the whole job; rank 0 returns the trained model (CPU)."""
    arch, hp = job.run.parsed()
    world, run_id = job.world_size, job.run.run_id
    cost = model_cost(arch)
    torch.manual_seed(hp.seed)  # identical replicas, identical to the engine's model
    model = build_model(arch)
    if job.run.initial_weights_b64:
        import base64

        from ..model import from_safetensors

        load_weights(model, from_safetensors(base64.b64decode(job.run.initial_weights_b64)))
    model.to(device)
    net = DistributedDataParallel(logits_module(model),
                                  device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(model.parameters(), hp.optimizer)
    x, y = splits.x_train.to(device), splits.y_train.to(device)
    order = BatchOrder(int(y.shape[0]), hp)
    slots = sampled_steps(order.steps_per_epoch, job.step_events_per_epoch)
    timer = ComputeTimer(device)
    if rank == 0:
        sink(ev.make_event(
            ev.RUN_STARTED, run_id, device=str(device), device_name=f"{world} ranks",
            epochs_total=hp.epochs, n_train=order.n, n_val=int(splits.x_val.shape[0]),
            batch_size=order.batch_size, cuda_graph=False, strategy="ddp", world_size=world,
            flops_per_sample={"forward": cost.forward_flops, "backward": cost.backward_flops},
            params=cost.params, dataset_source=getattr(splits, "source", None),
        ))

    def forward(xb: torch.Tensor, yb: torch.Tensor, b: int):
        logits = net(xb)  # (b_local, 784) -> (b_local, classes)
        return logits, F.cross_entropy(logits, yb, reduction="sum") * world / b

    stopper, global_step, stop = EarlyStopping(hp.early_stopping_patience, hp.min_delta), 0, False
    cancelled = False
    for epoch in range(1, hp.epochs + 1):
        net.train()
        t0 = time.perf_counter()
        # Per-step local loss sums and the epoch's correct count stay on the device; one
        # all-reduce at the end of the epoch turns them into global figures.
        local = torch.zeros(order.steps_per_epoch + 1, device=device)
        local_samples = 0
        for s, idx in enumerate(order.epoch()):
            b = int(idx.shape[0])
            mine = idx.tensor_split(world)[rank]
            xb, yb = x[mine.to(device)], y[mine.to(device)]
            logits, loss = timer.timed("forward", forward, xb, yb, b)
            optimizer.zero_grad(set_to_none=True)
            timer.timed("backward", _backward_and_step, loss, optimizer)
            local[s] = loss.detach() * b / world  # this slice's summed loss
            local[-1] += (logits.detach().argmax(1) == yb).sum()
            local_samples += int(mine.shape[0])
            global_step += 1
        train_s = time.perf_counter() - t0
        fwd_s, bwd_s = timer.collect()
        dist.all_reduce(local)
        sums = local.tolist()
        step_losses = [sums[s] / order.size(s) for s in slots]
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object((fwd_s, bwd_s, local_samples), gathered, dst=0)
        decision = [False, False]  # stop early, cancelled
        if rank == 0:
            assert gathered is not None
            model.eval()
            n_val = int(splits.x_val.shape[0])
            vl, vc = evaluate(logits_module(model), splits.x_val.to(device),
                              splits.y_val.to(device), job.eval_batch_size)
            devices = {
                job.device_name(r): device_report(cost.forward_flops * n, cost.backward_flops * n,
                                                  f, bk)
                for r, (f, bk, n) in enumerate(gathered)
            }
            metrics = epoch_metrics(
                epoch=epoch, step=global_step, samples=order.n, loss_sum=sum(sums[:-1]),
                correct=sums[-1], val=(vl.item(), vc.item(), n_val), train_s=train_s, t0=t0,
                devices=devices, model_flops=(cost.forward_flops, cost.backward_flops),
                strategy="ddp", world_size=world,
            )
            emit_steps(sink, run_id, epoch, global_step - order.steps_per_epoch, slots,
                       step_losses)
            sink(ev.make_event(ev.EPOCH, run_id, **metrics))
            decision = [stopper.update(metrics), bool(should_stop and should_stop())]
        dist.broadcast_object_list(decision, src=0)
        stop, cancelled = decision
        if stop or cancelled:
            break

    if rank != 0:
        return None
    if cancelled:
        sink(ev.make_event(ev.RUN_CANCELLED, run_id, epoch=epoch, step=global_step))
        return None
    # Scored on the test split like a single-process run, so its summary has test metrics.
    evaluation = score_on_test_split(logits_module(model), splits, run_id, epoch=epoch)
    if evaluation is not None:
        sink(evaluation)
    model = model.cpu()
    sink(ev.make_event(
        ev.RUN_COMPLETED, run_id, epochs_run=epoch, stopped_early=stop, metrics=metrics,
        parameters_safetensors_b64=encode_weights(model), size_bytes=4 * cost.params,
    ))
    return model


def _backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    loss.backward()  # DDP all-reduces (averages) gradients during backward
    optimizer.step()

