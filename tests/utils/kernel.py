"""A real IPython kernel (jupyter_client) that tests run cells in, as a notebook would."""

from __future__ import annotations

import time

import jupyter_client


class Kernel:
    def __init__(self, env: dict[str, str]):
        self.km = jupyter_client.KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.comm_updates = 0  # widget state updates seen on iopub (from any thread)
        self.comm_states: list[tuple[str, dict]] = []  # (comm id, state) of each, in order

    def run(self, code: str, timeout: float = 120) -> str:
        """Execute ``code``; return its stdout (raise on an error)."""
        msg_id = self.kc.execute(code)
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_msg" and content.get("data", {}).get("method") == "update":
                self.comm_updates += 1
                self.comm_states.append((content["comm_id"], content["data"]["state"]))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                raise AssertionError("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)
        raise TimeoutError(code)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
