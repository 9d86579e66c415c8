"""Settings read from the environment on every call (workbench.config): the worker tokens and
a tracked script's exit timeout, with a clear error for a bad value."""

import pytest

from workbench import config
from workbench.distributed.worker import coordinator_token, worker_token


def test_worker_tokens_are_read_when_asked(monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKER_TOKENS", "10.0.0.5:7000=alpha, Node.B:7001=beta,bad,x=")
    monkeypatch.setenv("WORKBENCH_WORKER_TOKEN", "  shared  ")
    assert config.worker_tokens_env() == {"10.0.0.5:7000": "alpha", "node.b:7001": "beta"}
    assert coordinator_token("10.0.0.5", 7000) == "alpha"
    assert coordinator_token("NODE.b", 7001) == "beta"  # addresses compare case-insensitively
    assert coordinator_token("10.0.0.9", 7000) == "shared"  # the one token for the rest
    assert worker_token() == ("shared", "WORKBENCH_WORKER_TOKEN", False)
    monkeypatch.setenv("WORKBENCH_WORKER_TOKEN", "   ")
    assert config.worker_token_env() is None


def test_track_exit_timeout(monkeypatch):
    monkeypatch.delenv("WORKBENCH_TRACK_EXIT_TIMEOUT_S", raising=False)
    assert config.track_exit_timeout_s() == 60.0
    monkeypatch.setenv("WORKBENCH_TRACK_EXIT_TIMEOUT_S", "2.5")
    assert config.track_exit_timeout_s() == 2.5
    monkeypatch.setenv("WORKBENCH_TRACK_EXIT_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="WORKBENCH_TRACK_EXIT_TIMEOUT_S must be a number.*soon"):
        config.track_exit_timeout_s()
