"""``wb.train`` in a real IPython kernel (jupyter_client): the cell shows a live plotly
FigureWidget whose data gains points while the run trains, sent to the frontend as widget
comm messages."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("jupyter_client")

from tests.utils.kernel import Kernel  # noqa: E402

EPOCHS = 6


@pytest.fixture
def kernel(tmp_path):
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path), "WORKBENCH_OFFLINE": "1"}
    k = Kernel(env)
    yield k
    k.close()


def test_train_figure_gains_points_while_training(kernel):
    kernel.run(
        "from workbench import notebook as wb\n"
        f"run = wb.train([784, 64, 10], {{'epochs': {EPOCHS}, 'batch_size': 50}}, "
        "limit=4000, device='cpu')\n"
        "fig_id, status_id = run.figure.model_id, run.status.model_id\n"
    )
    kernel.run("run.wait(240)")
    fig_id, status_id, state = kernel.run("print(fig_id, status_id, run.state)").split()
    assert state == "succeeded"
    assert kernel.run("print(run.points())").strip() == str(EPOCHS)
    # What the frontend was sent, in order: the figure's data grew one epoch at a time (each
    # epoch pushed as it ended, not all at the end), and only then did the status say done.
    sent: list[int | str] = []
    for comm_id, state_update in kernel.comm_states:
        update = state_update.get("_py2js_update") or {}
        if comm_id == fig_id and "x" in update.get("style_data", {}):
            sent.append(len(update["style_data"]["x"][0]))
        elif comm_id == status_id and "succeeded" in str(state_update.get("value", "")):
            sent.append("succeeded")
    assert sent == [*range(1, EPOCHS + 1), "succeeded"], sent
    out = kernel.run("df = wb.runs(); print(len(df), df.iloc[0]['state'])")
    assert out.split() == ["1", "succeeded"]
