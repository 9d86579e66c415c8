"""The app's network builder (native spec: CNNs) and its datasets, driven through their
parameters against a real service and DuckDB store (no browser): presets, live shape errors
from ``workbench.netspec``, launching a CNN, the dataset picker's registered datasets, the
playground's confusion matrix on the model's own dataset, and the export downloads."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from workbench.config import get_settings
from workbench.ui.builder import Builder
from workbench.ui.launch import LaunchPanel
from workbench.ui.model_files import export_file
from workbench.ui.netbuilder import NetBuilder
from workbench.ui.playground import Playground
from workbench.ui.state import AppState

sklearn = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def service(offline_service):
    return offline_service


def test_presets_and_live_shape_errors(service):
    state = AppState(service=service, device="cpu")
    b = NetBuilder(state)
    assert b.preset is None and b.to_json()["input_shape"] == [1, 28, 28]  # LeNet-5 by default
    assert b.errors == [] and state.network == b.to_json()
    assert "61,706" in b._summary.object  # LeNet-5's parameters, from the spec alone
    assert "→ [6, 28, 28]" in b._rows[0].cost.object

    b.set_field(0, "kernel", 40)  # does not fit the 28x28 input
    assert state.network is None
    assert b.layer_errors[0].startswith("layers[0]: conv2d kernel 40 (padding 2) does not fit")
    assert b._rows[0].error.visible and b._rows[1].cost.object == ""
    b.set_field(0, "kernel", 5)
    b.set_input_shape("128")
    assert b.layer_errors == {0: "layers[0]: conv2d expects [C, H, W], got [128]"}
    b.set_input_shape("1, 28, a")
    assert "expected integers" in b.errors[0]

    b.preset = "small-vgg"
    assert b.errors == [] and any(x["type"] == "batchnorm2d" for x in b.layers)
    b.add_layer("softmax")
    b.add_layer("relu")
    assert "softmax is only allowed as the final layer" in b.layer_errors[len(b.layers) - 2]


def test_launch_a_cnn_then_its_confusion_matrix_and_exports(service):
    state = AppState(service=service, device="cpu")
    NetBuilder(state).preset = "lenet5"
    state.build_mode = "network"
    launch = LaunchPanel(state, epochs=1, limit=256, batch_size=64)
    run_id = launch.launch()
    assert run_id, launch.message
    run = service.wait_run(run_id, timeout=240)
    assert run.state == "succeeded", run.error
    assert service.get_model(run.model_id).architecture["input_shape"] == [1, 28, 28]

    playground = Playground(state)
    playground.param_id = run.param_id
    m = playground.confusion_matrix()
    assert m is not None and m.shape == (10, 10) and m.sum() == len(
        service.run_test_data(run_id)["y"])

    name, onnx = export_file(service, run.param_id, "onnx")
    assert name.endswith(".onnx") and len(onnx) > 60_000 * 4  # the weights are in it
    name, script = export_file(service, run.param_id, "torchscript")
    assert name.endswith(".pt") and zipfile.is_zipfile(io.BytesIO(script))


def test_a_registered_dataset_in_the_picker_and_the_playground(service):
    data = get_settings().file_roots[0]
    data.mkdir(parents=True, exist_ok=True)
    bunch = sklearn.load_wine()
    rows = [",".join([*map(repr, map(float, x)), str(bunch.target_names[t])])
            for x, t in zip(bunch.data, bunch.target)]
    path = data / "wine-ui.csv"
    path.write_text("\n".join([",".join([*bunch.feature_names, "label"]), *rows]) + "\n")
    service.register_dataset("wine-ui", path=str(path))

    state = AppState(service=service, device="cpu")
    builder = Builder(state)  # the MLP builder: its architecture is stored in native form
    launch = LaunchPanel(state, epochs=20, batch_size=32, lr=0.01)
    launch.__panel__()  # the picker lists the registry
    assert "wine-ui" in state.param.dataset.objects
    state.dataset = "wine-ui"
    assert state.num_classes == 3
    assert "3 classes: class_0, class_1, class_2" in launch._dataset_view().object
    builder.load_json({"input_size": 13, "layers": [{"type": "linear", "in": 13, "out": 16},
                                                    {"type": "relu"},
                                                    {"type": "linear", "in": 16, "out": 3}]})
    assert builder.errors == []
    run_id = launch.launch()
    assert run_id, launch.message
    run = service.wait_run(run_id, timeout=240)
    assert run.state == "succeeded" and run.dataset == "wine-ui", run.error

    playground = Playground(state)
    assert playground.param_id == run.param_id  # the chosen dataset's newest model
    assert playground.classes == ["class_0", "class_1", "class_2"]
    assert playground.predict_sample(0) in (0, 1, 2)
    assert "true class class_" in playground.source
    m = playground.confusion_matrix()
    assert m.shape == (3, 3) and m.sum() == 35  # wine's seeded 20 % test split
    assert np.trace(m) / m.sum() >= 0.8
    drawn = playground._guard(playground.predict_pixels, np.zeros((28, 28), np.float32), "x")
    assert drawn is None and "trained on wine-ui" in playground.message  # no wine sample
