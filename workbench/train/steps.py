"""One training step, two ways: eager (any device) and captured in CUDA graphs.

Both accumulate the epoch's loss sum and correct count on the device, so the loop never waits
for the host between steps. ``run(xb, yb, timer)`` does forward, backward and update, marking
the phase boundaries on ``timer``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class EagerStep:
    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device):
        self.net, self.optimizer = net, optimizer
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.last_loss = torch.zeros((), device=device)

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()

    def run(self, xb: torch.Tensor, yb: torch.Tensor, timer) -> None:
        timer.start()
        logits = self.net(xb)  # (B, in) -> (B, classes)
        loss = F.cross_entropy(logits, yb)
        timer.mark_forward()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        timer.mark_backward()
        loss = loss.detach()
        self.last_loss = loss
        self.loss_sum += loss * yb.shape[0]
        self.correct += (logits.detach().argmax(1) == yb).sum()


class GraphedStep:
    """The whole step (forward + loss + metric accumulation, then backward + optimizer update)
    captured as two CUDA graphs sharing one memory pool: replaying them costs two launches
    instead of dozens, which is what makes a small MLP fast on a GPU. Two graphs, not one, so
    CUDA events between them time forward and backward separately.

    The batch size is fixed by the capture; the caller drops an incomplete last batch.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        batch_size: int,
        input_size: int,
    ):
        self.net, self.optimizer = net, optimizer
        self.static_x = torch.zeros(batch_size, input_size, device=device)
        self.static_y = torch.zeros(batch_size, dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        params = [p for p in net.parameters() if p.requires_grad]

        # Warm up on a side stream (required before capture), then undo its updates so the
        # captured run starts from the same weights (and batchnorm statistics) an eager run
        # would.
        saved = [p.detach().clone() for p in params]
        buffers = list(net.buffers())
        saved_buffers = [b.detach().clone() for b in buffers]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(self.static_x), self.static_y).backward()
                optimizer.step()
        torch.cuda.current_stream(device).wait_stream(side)
        with torch.no_grad():
            for p, value in zip([*params, *buffers], [*saved, *saved_buffers]):
                p.copy_(value)
            for state in optimizer.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()  # momentum/moments and Adam's step counter start at zero

        optimizer.zero_grad(set_to_none=True)
        self.forward_graph, self.backward_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph):
            logits = net(self.static_x)
            self.loss = F.cross_entropy(logits, self.static_y)
            self.loss_sum.add_(self.loss.detach() * batch_size)
            self.correct.add_((logits.detach().argmax(1) == self.static_y).sum())
        with torch.cuda.graph(self.backward_graph, pool=self.forward_graph.pool()):
            self.loss.backward()
            optimizer.step()
        self.last_loss = self.loss
        self.reset()

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()

    def run(self, xb: torch.Tensor, yb: torch.Tensor, timer) -> None:
        self.static_x.copy_(xb)
        self.static_y.copy_(yb)
        timer.start()
        self.forward_graph.replay()
        timer.mark_forward()
        self.backward_graph.replay()
        timer.mark_backward()
