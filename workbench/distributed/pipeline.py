"""Pipeline-parallel training: one stage of consecutive layers per rank, GPipe micro-batches.

Built on ``torch.distributed.pipelining`` (``PipelineStage`` + ``ScheduleGPipe``). Every rank
builds the whole model from the seed (so the weights equal a single-process run's) and keeps the
layers of its :class:`~workbench.distributed.allocation.StagePlan`. Rank 0 feeds the inputs, the
last rank computes the loss; each epoch the stages' weights and timings are gathered on rank 0,
which evaluates the assembled model and reports the epoch.

Exactness: the loss of a micro-batch is its *summed* cross-entropy times ``M / B`` (``M``
micro-batches, ``B`` samples in the whole batch); the schedule divides gradients by ``M``, so the
accumulated gradient is that of the batch-mean loss whatever the chunk sizes, i.e. the same
update as the single-process engine up to float summation order.
"""

from __future__ import annotations

import time
from typing import Any, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

from .. import events as ev
from ..model import build_model, encode_weights, load_weights, logits_module, model_cost
from ..train.early_stopping import EarlyStopping
from ..train.engine import evaluate
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


class TimedStage(PipelineStage):
    """A PipelineStage that times its own compute (forward and backward of each chunk)."""

    timer: ComputeTimer

    def forward_one_chunk(self, *args: Any, **kwargs: Any):
        return self.timer.timed("forward", super().forward_one_chunk, *args, **kwargs)

    def backward_one_chunk(self, *args: Any, **kwargs: Any):
        return self.timer.timed("backward", super().backward_one_chunk, *args, **kwargs)


def stage_module(model: nn.Sequential, start: int, end: int, last: bool) -> nn.Sequential:
    """``model[start:end]`` (keys keep their spec indices); the last stage emits logits."""
    module = cast(nn.Sequential, model[start:end])
    return cast(nn.Sequential, logits_module(module)) if last else module


def train_pipeline(job: DistJob, rank: int, splits: Any, device: torch.device,
                   sink: ev.Sink) -> nn.Sequential | None:
    """Run this rank's stage for the whole job; rank 0 returns the trained model (CPU)."""
    arch, hp = job.run.parsed()
    plans = job.stage_plans()
    if len(plans) != job.world_size:
        raise ValueError(f"the pipeline plan has {len(plans)} stages for {job.world_size} ranks")
    plan = plans[rank]
    first, last = rank == 0, rank == job.world_size - 1
    run_id = job.run.run_id
    cost = model_cost(arch)

    torch.manual_seed(hp.seed)  # the engine's initialisation: same seed, same weights
    model = build_model(arch)
    if job.run.initial_weights_b64:
        import base64

        from ..model import from_safetensors

        load_weights(model, from_safetensors(base64.b64decode(job.run.initial_weights_b64)))
    module = stage_module(model, plan.start, plan.end, last).to(device)
    optimizer = make_optimizer(module.parameters(), hp.optimizer)
    # Inputs live on the first stage only, targets on the last (empty elsewhere).
    x = splits.x_train.to(device) if first else torch.empty(0)  # (N, 784)
    y = splits.y_train.to(device) if last else torch.empty(0, dtype=torch.int64)  # (N,)
    order = BatchOrder(int(splits.y_train.shape[0]), hp)
    slots = sampled_steps(order.steps_per_epoch, job.step_events_per_epoch)
    timer = ComputeTimer(device)

    batch = {"size": order.batch_size, "micro": job.micro_batches}

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # (b, classes), (b,) -> scalar; see the module docstring for the M / B factor.
        return F.cross_entropy(logits, target, reduction="sum") * batch["micro"] / batch["size"]

    # A stage infers its buffer shapes on first use, so each distinct batch size (the full one
    # and a smaller last batch) gets its own stage object over the same module.
    schedules: dict[int, ScheduleGPipe] = {}

    def schedule_for(b: int) -> ScheduleGPipe:
        if b not in schedules:
            stage = TimedStage(module, rank, job.world_size, device)
            stage.timer = timer
            schedules[b] = ScheduleGPipe(stage, n_microbatches=min(job.micro_batches, b),
                                         loss_fn=loss_fn)
        return schedules[b]

    if first:
        sink(ev.make_event(
            ev.RUN_STARTED, run_id, device=str(device), device_name=f"{job.world_size} ranks",
            epochs_total=hp.epochs, n_train=order.n, n_val=int(splits.x_val.shape[0]),
            batch_size=order.batch_size, cuda_graph=False, strategy="pipeline",
            world_size=job.world_size, micro_batches=job.micro_batches,
            allocation=[p.to_json() for p in plans],
            flops_per_sample={"forward": cost.forward_flops, "backward": cost.backward_flops},
            params=cost.params,
        ))

    stopper, global_step = EarlyStopping(hp.early_stopping_patience, hp.min_delta), 0
    for epoch in range(1, hp.epochs + 1):
        module.train()
        t0 = time.perf_counter()
        loss_sum, correct, step_losses = 0.0, 0, []
        for s, idx in enumerate(order.epoch()):
            b = int(idx.shape[0])
            batch.update(size=b, micro=min(job.micro_batches, b))
            schedule = schedule_for(b)
            optimizer.zero_grad(set_to_none=True)
            if first and last:
                losses: list[torch.Tensor] = []
                out = schedule.step(x[idx], target=y[idx], losses=losses)
            elif first:
                schedule.step(x[idx])
            elif last:
                losses = []
                out = schedule.step(target=y[idx], losses=losses)
            else:
                schedule.step()
            optimizer.step()
            if last:
                mean_loss = torch.stack(losses).sum() / batch["micro"]  # the batch-mean loss
                loss_sum += mean_loss.item() * b
                correct += int((out.detach().argmax(1) == y[idx]).sum())
                if s in slots:
                    step_losses.append(mean_loss.item())
            global_step += 1
        train_s = time.perf_counter() - t0
        fwd_s, bwd_s = timer.collect()

        # Everything rank 0 needs for the report: weights, timings, and the last stage's loss.
        mine = {
            "state": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "forward_s": fwd_s, "backward_s": bwd_s,
            "loss_sum": loss_sum, "correct": correct, "step_losses": step_losses,
        }
        gathered: list[Any] | None = [None] * job.world_size if first else None
        dist.gather_object(mine, gathered, dst=0)
        stop = [False]
        if first:
            assert gathered is not None
            model.load_state_dict({k: v for g in gathered for k, v in g["state"].items()})
            model.eval()
            n_val = int(splits.x_val.shape[0])
            vl, vc = evaluate(logits_module(model), splits.x_val, splits.y_val,
                              job.eval_batch_size)
            samples = order.n
            devices = {
                job.device_name(r): device_report(plans[r].forward_flops * samples,
                                                  plans[r].backward_flops * samples,
                                                  g["forward_s"], g["backward_s"])
                for r, g in enumerate(gathered)
            }
            tail = gathered[-1]
            metrics = epoch_metrics(
                epoch=epoch, step=global_step, samples=samples, loss_sum=tail["loss_sum"],
                correct=tail["correct"], val=(vl.item(), vc.item(), n_val), train_s=train_s,
                t0=t0, devices=devices, model_flops=(cost.forward_flops, cost.backward_flops),
                strategy="pipeline", world_size=job.world_size,
            )
            emit_steps(sink, run_id, epoch, global_step - order.steps_per_epoch, slots,
                       tail["step_losses"])
            sink(ev.make_event(ev.EPOCH, run_id, **metrics))
            stop = [stopper.update(metrics)]
        dist.broadcast_object_list(stop, src=0)  # every rank leaves the loop together
        if stop[0]:
            break

    if not first:
        return None
    model = model.cpu()
    sink(ev.make_event(
        ev.RUN_COMPLETED, run_id, epochs_run=epoch, stopped_early=bool(stop[0]),
        metrics=metrics, parameters_safetensors_b64=encode_weights(model),
        size_bytes=4 * cost.params,
    ))
    return model
