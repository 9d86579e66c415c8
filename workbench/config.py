"""Settings: every ``WORKBENCH_*`` environment variable is read here and nowhere else.

Plain pydantic (not pydantic-settings) so the core engine imports with only torch, numpy and
pydantic installed. Call ``get_settings()``; tests that change the environment call
``get_settings.cache_clear()``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field


class Settings(BaseModel):
    home: Path = Field(doc="WORKBENCH_HOME: the DuckDB store, keys and artifacts live here")
    data_dir: Path = Field(doc="WORKBENCH_DATA: cache of downloaded datasets")
    token: str | None = Field(default=None, doc="WORKBENCH_TOKEN: bootstrap admin API key")
    mnist_mirror: str | None = Field(
        default=None, doc="WORKBENCH_MNIST_MIRROR: base URL tried before the public mirrors"
    )
    fashion_mnist_dir: Path = Field(
        default=Path("/usr/share/datasets/fashion-mnist"),
        doc="WORKBENCH_FASHION_MNIST_DIR: local IDX files (Debian's dataset-fashion-mnist)",
    )
    offline: bool = Field(default=False, doc="WORKBENCH_OFFLINE=1: never touch the network")
    workers: int = Field(default=2, ge=1, doc="WORKBENCH_WORKERS: runs training at once")
    server_url: str | None = Field(
        default=None, doc="WORKBENCH_SERVER_URL: a running server the CLI should talk to"
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1,
        doc="WORKBENCH_MAX_BODY_BYTES: larger request bodies get 413 (512 JSON inputs ~ 8 MB)",
    )
    rate_limit_per_minute: int = Field(
        default=1200, ge=0,
        doc="WORKBENCH_RATE_LIMIT_PER_MINUTE: /api/v1 requests per key per minute (0: no limit)",
    )

    @property
    def db_path(self) -> Path:
        return self.home / "workbench.duckdb"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    home = Path(_env("WORKBENCH_HOME") or Path.home() / ".workbench").expanduser()
    values: dict = {
        "home": home,
        "data_dir": Path(_env("WORKBENCH_DATA") or home / "data").expanduser(),
        "token": _env("WORKBENCH_TOKEN"),
        "mnist_mirror": _env("WORKBENCH_MNIST_MIRROR"),
        "offline": (_env("WORKBENCH_OFFLINE") or "0").lower() in ("1", "true", "yes"),
        "server_url": _env("WORKBENCH_SERVER_URL"),
    }
    if fashion := _env("WORKBENCH_FASHION_MNIST_DIR"):
        values["fashion_mnist_dir"] = Path(fashion)
    if workers := _env("WORKBENCH_WORKERS"):
        values["workers"] = int(workers)
    if max_body := _env("WORKBENCH_MAX_BODY_BYTES"):
        values["max_body_bytes"] = int(max_body)
    if rate_limit := _env("WORKBENCH_RATE_LIMIT_PER_MINUTE"):
        values["rate_limit_per_minute"] = int(rate_limit)
    return Settings(**values)
