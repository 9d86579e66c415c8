"""A dense MLP's training step with its backward pass written out: no autograd graph.

For a ``Sequential`` of ``Linear`` layers, each optionally followed by ReLU, sigmoid or tanh,
the gradients of mean cross-entropy are a handful of matmuls and elementwise ops that torch has
as single kernels (``threshold_backward`` and friends, the same ones autograd calls). Written
out, a step runs about 25 ops instead of autograd's ~60 plus its graph bookkeeping, and writes
each gradient straight into a ``.grad`` buffer kept across steps. On a 2-core CPU at batch 128
that is a quarter to a third of a step (``benchmarks/train_vs_baselines.py``); the matmuls are
the same. On CUDA the engine captures the step in graphs instead, where launch overhead is
already gone, so this step is for the CPU.

The gradients equal autograd's up to float rounding (``tests/test_mlp_step.py`` holds them to
1e-6). Anything else -- dropout, normalisation, conv, GELU, frozen layers -- trains with
``EagerStep``; ``MlpStep.plan`` says whether a network qualifies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..model import InputShape

# activation module -> (in-place forward, backward computed from the activation's output)
_ACTIVATIONS = {
    nn.ReLU: (torch.relu_, lambda grad, out: torch.ops.aten.threshold_backward(grad, out, 0)),
    nn.Sigmoid: (torch.sigmoid_, torch.ops.aten.sigmoid_backward),
    nn.Tanh: (torch.tanh_, torch.ops.aten.tanh_backward),
}


@dataclass(frozen=True)
class _Layer:
    linear: nn.Linear
    # the activation after the linear layer, as its _ACTIVATIONS entry, or None
    activation: tuple[Callable, Callable] | None = None


class MlpStep:
    def __init__(self, layers: list[_Layer], optimizer: torch.optim.Optimizer,
                 device: torch.device):
        self.layers, self.optimizer = layers, optimizer
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.last_loss = torch.zeros((), device=device)

    @staticmethod
    def plan(net: nn.Module) -> list[_Layer] | None:
        """The layers of ``net`` when it is a trainable Linear/activation stack (after a native
        spec's input reshape and flatten, which leave flat rows flat), else None."""
        if not isinstance(net, nn.Sequential):
            return None
        layers: list[_Layer] = []
        shaped = False  # rows reshaped to (B, C, H, W) by a native spec's input and not flattened
        for module in net:
            if not layers and isinstance(module, (InputShape, nn.Flatten)):
                # before the first layer these only reshape the flat rows the step gets
                if isinstance(module, InputShape):
                    shaped = len(module.shape) > 1
                elif (module.start_dim, module.end_dim) == (1, -1):
                    shaped = False
                else:
                    return None
            elif isinstance(module, nn.Linear) and not shaped:
                if not all(p.requires_grad for p in module.parameters()):
                    return None  # frozen layers: autograd skips their gradients for us
                layers.append(_Layer(module))
            elif type(module) in _ACTIVATIONS and layers and layers[-1].activation is None:
                layers[-1] = _Layer(layers[-1].linear, _ACTIVATIONS[type(module)])
            else:
                return None
        return layers or None

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()

    @torch.no_grad()
    def run(self, xb: torch.Tensor, yb: torch.Tensor, timer) -> None:
        timer.start()
        batch = yb.shape[0]
        outputs = [xb]  # each layer's input, then the logits: (B, in) ... (B, classes)
        for layer in self.layers:
            lin = layer.linear
            h = (torch.addmm(lin.bias, outputs[-1], lin.weight.t()) if lin.bias is not None
                 else outputs[-1] @ lin.weight.t())
            if layer.activation is not None:
                layer.activation[0](h)  # in place
            outputs.append(h)
        logits = outputs[-1]
        log_probs = torch.log_softmax(logits, 1)
        target = yb.unsqueeze(1)
        loss = -log_probs.gather(1, target).mean()
        timer.mark_forward()

        # d(mean CE)/d(logits) = (softmax - onehot) / B
        grad = log_probs.exp_()
        grad.scatter_add_(1, target, torch.full_like(target, -1, dtype=grad.dtype))
        grad.div_(batch)
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if layer.activation is not None:
                grad = layer.activation[1](grad, outputs[i + 1])
            lin = layer.linear
            torch.mm(grad.t(), outputs[i], out=_grad_buffer(lin.weight))
            if lin.bias is not None:
                torch.sum(grad, 0, out=_grad_buffer(lin.bias))
            if i:  # the input batch needs no gradient
                grad = grad @ lin.weight
        self.optimizer.step()
        timer.mark_backward()

        self.last_loss = loss
        self.loss_sum += loss * batch
        self.correct += (logits.argmax(1) == yb).sum()


def _grad_buffer(param: torch.Tensor) -> torch.Tensor:
    """``param.grad``, allocated once (a checkpoint restore or ``zero_grad`` may drop it)."""
    if param.grad is None:
        param.grad = torch.empty_like(param)
    return param.grad
