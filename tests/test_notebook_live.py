"""``wb.train`` in a real IPython kernel (jupyter_client): the cell shows a live plotly
FigureWidget whose data gains points while the run trains, sent to the frontend as widget
comm messages."""

from __future__ import annotations

import os
import time

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
        "fig_id = run.figure.model_id\n"
    )
    updates_before = kernel.comm_updates
    seen: list[tuple[int, str]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        points, state = kernel.run("print(run.points(), run.state)").split()
        if not seen or seen[-1] != (int(points), state):
            seen.append((int(points), state))
        if state in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert seen[-1] == (EPOCHS, "succeeded"), seen
    # The figure had some but not all epochs while the run was still going.
    assert any(0 < p < EPOCHS and s == "running" for p, s in seen), seen
    assert kernel.comm_updates > updates_before  # the frontend was sent the new points
    out = kernel.run("df = wb.runs(); print(len(df), df.iloc[0]['state'])")
    assert out.split() == ["1", "succeeded"]
