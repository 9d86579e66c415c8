"""A run left queued by a stopped server is re-dispatched exactly as it was asked for:
fine-tuning weights, frozen layers and dropout included."""

import torch

from workbench.model import from_safetensors
from workbench.service import Workbench
from workbench.spec import Architecture
from workbench.store import Store

CORTEX = Architecture.from_cortex(
    {"input_dim": 784, "hidden_dims": [32], "output_dim": 10, "dropout_rate": 0.1}
)


def test_queued_finetune_resumes_with_weights_freeze_and_dropout(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")
    path = tmp_path / "wb.duckdb"
    tiny = {"epochs": 1, "batch_size": 64, "optimizer": {"type": "adam", "lr": 0.01}}

    first = Workbench(Store(path), max_workers=1)
    model = first.create_model(CORTEX.to_json(), tiny, allow_dropout=True)
    parent = first.start_run(model.model_id, limit=300,
                             spec_overrides={"allow_dropout": True})
    parent = first.wait_run(parent.run_id, timeout=180)
    assert parent.state == "succeeded", parent.error
    # Occupy the only worker so the fine-tune stays queued, then stop the "server".
    blocker = first.start_run(model.model_id, hyperparams={"epochs": 200}, limit=2000,
                              spec_overrides={"allow_dropout": True})
    finetune = first.start_run(
        model.model_id, limit=300, initial_param_id=parent.param_id,
        spec_overrides={"allow_dropout": True, "freeze": [0]},
    )
    assert first.get_run(finetune.run_id).state == "queued"
    first.close()

    second = Workbench(Store(path), max_workers=1)
    try:
        assert second.get_run(blocker.run_id).state == "failed"
        assert finetune.run_id in second.resume_queued()
        done = second.wait_run(finetune.run_id, timeout=180)
        assert done.state == "succeeded", done.error
        before = from_safetensors(second.get_param_record(parent.param_id).safetensors)
        after = from_safetensors(second.get_param_record(done.param_id).safetensors)
        assert torch.equal(before["0.weight"], after["0.weight"])  # frozen, bit-identical
        assert not torch.equal(before["3.weight"], after["3.weight"])  # trained
    finally:
        second.close()
