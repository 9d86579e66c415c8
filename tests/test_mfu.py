"""MFU: achieved TFLOPS over the spec-sheet dense peak of the GPU and the dtype its matmuls run
in, next to the share of the measured peak; unknown GPUs (and MIG slices) get none, CPUs keep
the measured peak only."""

from __future__ import annotations

import pytest
import torch

from workbench.spec_peaks import matmul_dtype, mfu_metrics, spec_peak_tflops


@pytest.mark.parametrize("name, dtype, tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4),      # SXM
    ("NVIDIA H100 80GB HBM3", "tf32", 494.7),
    ("NVIDIA H100 PCIe", "fp32", 51.2),
    ("NVIDIA H100 NVL", "bf16", 835.5),
    ("NVIDIA H200", "tf32", 494.7),
    ("NVIDIA A100-SXM4-80GB", "tf32", 156.0),
    ("NVIDIA A100 80GB PCIe", "bf16", 312.0),
    ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA L40S", "fp32", 91.6),
    ("NVIDIA A10", "fp32", 31.2),
    ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
])
def test_known_gpus_have_their_dense_spec_peak(name, dtype, tflops):
    assert spec_peak_tflops(name, dtype) == pytest.approx(tflops)


@pytest.mark.parametrize("name", [
    "NVIDIA H100 80GB HBM3 MIG 1g.10gb",  # a slice: a fraction of the chip's peak
    "NVIDIA A10G", "NVIDIA L40", "NVIDIA GH200 480GB", "Tesla T4", "NVIDIA H100",
    "NVIDIA GeForce RTX 3090",
])
def test_unknown_gpus_and_mig_slices_get_no_spec_peak(name):
    assert spec_peak_tflops(name, "fp32") is None


def test_a_bad_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="dtype: one of fp32, tf32, bf16, got 'fp8'"):
        spec_peak_tflops("NVIDIA H200", "fp8")


def test_the_dtype_follows_the_weights_and_torchs_tf32_switch():
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert matmul_dtype() == matmul_dtype(torch.float32) == "fp32"
        torch.backends.cuda.matmul.allow_tf32 = True
        assert matmul_dtype(torch.float32) == "tf32"
        assert matmul_dtype(torch.bfloat16) == matmul_dtype(torch.float16) == "bf16"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_the_cpu_path_has_no_mfu():
    assert mfu_metrics("cpu", 0.2) == {}


def test_share_of_the_measured_peak_never_passes_one(tmp_path, monkeypatch):
    from workbench import peaks
    from workbench.config import get_settings

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        assert peaks.share_of_peak("cpu", 0.1) is None  # never probed: no share, no probe
        peaks._raise_to("cpu", 0.2, "probe")
        assert peaks.share_of_peak("cpu", 0.1) == pytest.approx(0.5)
        assert peaks.share_of_peak("cpu", 0.3) == 1.0  # the peak was low: it rises
        assert peaks.stored("cpu").tflops == pytest.approx(0.3)
    finally:
        get_settings.cache_clear()


def test_the_app_and_cli_show_mfu_next_to_share_of_peak():
    from workbench.ui.live import mfu_label

    assert mfu_label({"mfu": 0.4123, "matmul_dtype": "tf32"}) == "41.2% of tf32 spec"
    assert mfu_label({"mfu": 0.5}) == "50.0%"  # reloaded from the store: no dtype there
    assert mfu_label({"total_tflops": 0.2}) == "–"  # CPU / unknown GPU: not guessed


def test_a_cpu_epoch_reports_its_share_of_the_stored_peak_and_no_mfu(tmp_path, monkeypatch):
    from workbench import peaks
    from workbench.config import get_settings
    from workbench.data import load_splits
    from workbench.spec import Architecture, Hyperparams
    from workbench.train import TrainOptions, train

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        peaks._raise_to("cpu", 1e-6, "probe")  # far below anything achieved: must rise
        splits = load_splits("mnist", offline=True, limit=500, progress=False)
        result = train(Architecture.from_layer_sizes([784, 16, 10]),
                       Hyperparams.model_validate({"epochs": 1}), splits,
                       sink=lambda e: None, options=TrainOptions(device="cpu"))
        epoch = result.history[-1]
        assert epoch["share_of_peak"] == 1.0 and "mfu" not in epoch
        assert peaks.stored("cpu").tflops == pytest.approx(epoch["total_tflops"])
    finally:
        get_settings.cache_clear()


def test_cli_summary_prints_shares_as_percentages(capsys):
    from workbench.cli.output import print_summary

    print_summary({"total_tflops": 0.25, "share_of_peak": 0.875, "mfu": 0.0123})
    out = capsys.readouterr().out
    assert "87.5%" in out and "1.2%" in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_engine_epoch_on_a_gpu_reports_mfu_of_a_known_gpu():
    from workbench.data import load_splits
    from workbench.spec import Architecture, Hyperparams
    from workbench.train import TrainOptions, train

    splits = load_splits("mnist", offline=True, limit=2000, progress=False)
    result = train(Architecture.from_layer_sizes([784, 128, 10]),
                   Hyperparams.model_validate({"epochs": 1, "batch_size": 512}), splits,
                   sink=lambda e: None, options=TrainOptions(device="cuda"))
    epoch = result.history[-1]
    spec = spec_peak_tflops(torch.cuda.get_device_name(0), matmul_dtype())
    if spec is None:
        assert "mfu" not in epoch  # unknown GPU: not guessed
    else:
        assert epoch["mfu"] == pytest.approx(epoch["total_tflops"] / spec)
        assert 0 < epoch["mfu"] < 1 and epoch["matmul_dtype"] in ("fp32", "tf32")
