"""Model building, exact Parameters round trip, safetensors, and FLOP counts vs torch's counter."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from workbench.model import (
    build_model,
    encode_weights,
    from_parameters,
    from_safetensors,
    layer_costs,
    linear_layer_names,
    logits_module,
    model_cost,
    state_tensors,
    to_parameters,
    to_safetensors,
)
from workbench.spec import Architecture, Parameters, validate_architecture

ARCH = Architecture.from_layer_sizes([784, 128, 64, 10])


def test_build_matches_spec_layer_by_layer():
    model = build_model(ARCH)
    assert len(model) == len(ARCH.layers)
    assert model(torch.zeros(3, 784)).shape == (3, 10)
    soft = validate_architecture(
        {"input_size": 784, "layers": [*ARCH.to_json()["layers"], {"type": "softmax"}]}
    )
    m = build_model(soft)
    assert torch.allclose(m(torch.ones(2, 784)).sum(1), torch.ones(2))
    assert not isinstance(logits_module(m)[-1], torch.nn.Softmax)


def test_parameters_json_round_trip_is_bit_exact():
    import json

    torch.manual_seed(0)
    model = build_model(ARCH)
    tensors = state_tensors(model)
    doc = to_parameters(ARCH, tensors).model_dump()
    # through real JSON text, as the API sends it
    back = from_parameters(ARCH, Parameters.model_validate_json(json.dumps(doc)))
    for key, value in tensors.items():
        assert value.dtype == back[key].dtype == torch.float32
        assert np.array_equal(value.numpy().view(np.uint32), back[key].numpy().view(np.uint32))
    # W is [out][in], as nn.Linear.weight
    assert len(doc["layers"][0]["W"]) == 128 and len(doc["layers"][0]["W"][0]) == 784


def test_safetensors_round_trip_and_fallback_writer_agree():
    from workbench.model import _safetensors_save_fallback

    model = build_model(ARCH)
    tensors = state_tensors(model)
    for blob in (to_safetensors(model), _safetensors_save_fallback(tensors)):
        back = from_safetensors(blob)
        assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    import base64

    assert from_safetensors(base64.b64decode(encode_weights(model))).keys() == tensors.keys()


def test_layer_costs_from_spec():
    costs = layer_costs(ARCH)
    assert [c.output_shape for c in costs] == [(128,), (128,), (64,), (64,), (10,)]
    assert [c.params for c in costs] == [784 * 128 + 128, 0, 128 * 64 + 64, 0, 64 * 10 + 10]
    total = model_cost(ARCH)
    assert total.params == sum(p.numel() for p in build_model(ARCH).parameters())
    assert linear_layer_names(ARCH) == {"layer1": 0, "layer2": 2, "layer3": 4}


@pytest.mark.parametrize("sizes", [[784, 128, 64, 10], [784, 10], [784, 256, 128, 10]])
def test_flops_match_torch_flop_counter(sizes):
    arch = Architecture.from_layer_sizes(sizes)
    model = build_model(arch)
    batch = 32
    x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as fwd:
        loss = F.cross_entropy(model(x), y)
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    cost = model_cost(arch)
    assert fwd.get_total_flops() == cost.forward_flops * batch
    assert bwd.get_total_flops() == cost.backward_flops * batch
