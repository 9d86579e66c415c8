"""``workbench train --arch FILE`` with the shipped native-spec presets (a real subprocess and
an on-demand owner, as tests/test_cli.py does)."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "architectures"


def workbench(*args, env, timeout=240):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_a_preset_cnn_from_its_json_file(tmp_path):
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_OFFLINE": "1"}
    try:
        out = workbench("train", "--arch", str(EXAMPLES / "lenet5.json"), "--epochs", "1",
                        "--limit", "300", "--offline", env=env)
        assert out.returncode == 0, out.stderr
        for word in ("succeeded", "test_accuracy", "forward_tflops"):
            assert word in out.stdout, word
        bad = tmp_path / "bad.json"
        bad.write_text('{"input_shape": [1, 28, 28], "layers": [{"type": "linear", "out": 10}]}')
        refused = workbench("train", "--arch", str(bad), env=env)
        assert refused.returncode == 2
        assert "layers[0]: linear expects [features], got [1, 28, 28]" in refused.stderr
    finally:
        workbench("stop", env=env)
