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

MiB = 1024 * 1024
GiB = 1024 * MiB
LOOPBACK_HOSTS = ("localhost", "127.0.0.0/8", "::1")


class Limits(BaseModel):
    """What one submission may ask of this server. Every face (MNIST API, /api/v1, the
    distributed-trainer API, the app, the CLI through the API) is held to these same numbers:
    the checks live in ``workbench.spec`` / ``workbench.service`` and the data loaders."""

    max_params: int = Field(
        default=20_000_000, ge=1,
        doc="WORKBENCH_MAX_PARAMS: parameters per model (20 M ~ 80 MB of float32 weights)",
    )
    max_activation_bytes: int = Field(
        default=1 * GiB, ge=1,
        doc="WORKBENCH_MAX_ACTIVATION_BYTES: float32 activations (and their gradients) of one "
        "training batch, computed from the architecture and batch_size",
    )
    max_world_size: int | None = Field(
        default=None, ge=1,
        doc="WORKBENCH_MAX_WORLD_SIZE: local torch.distributed ranks of one run (default: the "
        "machine's CPU count, os.cpu_count(), and at least 2 so the default DDP run fits)",
    )
    max_queued_runs: int = Field(
        default=100, ge=1,
        doc="WORKBENCH_MAX_QUEUED_RUNS: runs waiting for a worker; past it a submission gets "
        "503 with Retry-After",
    )
    max_download_bytes: int = Field(
        default=256 * MiB, ge=1,
        doc="WORKBENCH_MAX_DOWNLOAD_BYTES: one downloaded file (streamed to a temporary file on "
        "disk, never held whole in memory)",
    )
    max_decompressed_bytes: int = Field(
        default=512 * MiB, ge=1,
        doc="WORKBENCH_MAX_DECOMPRESSED_BYTES: one decompressed data file or array (gzip IDX, "
        ".npz member), checked while decompressing",
    )
    max_body_bytes: int = Field(
        default=32 * MiB, ge=1,
        doc="WORKBENCH_MAX_BODY_BYTES: larger request bodies get 413 (512 JSON inputs ~ 8 MB)",
    )

    @property
    def world_size_cap(self) -> int:
        """The most local ranks a run may ask for: the setting, else the CPU count (at least 2,
        the distributed target's default world size)."""
        return self.max_world_size or max(2, os.cpu_count() or 1)


OWNER_TIER = "owner"  # the tier of the server's own credentials (bootstrap admin, local key)
ANONYMOUS_TIER = "anonymous"  # requests without a valid key, counted per client address


class RateLimits(BaseModel):
    """Requests per minute on every ``/api`` route, per API key, by the key's tier (the Cortex
    conventions' plans). A key may also carry its own limit. Requests without a valid key are
    counted per client address on the ``anonymous`` tier."""

    tiers: dict[str, int] = Field(
        default_factory=lambda: {"free": 60, "pro": 300, "enterprise": 3000,
                                 OWNER_TIER: 1_000_000, ANONYMOUS_TIER: 600},
        doc="WORKBENCH_RATE_LIMIT_TIERS ('free=60,pro=300,...', merged into these defaults); "
        "WORKBENCH_RATE_LIMIT_PER_MINUTE sets the default tier's number. 'owner' is the tier "
        "of the server's own credentials (WORKBENCH_TOKEN's bootstrap admin key and the "
        "owner's local credential that the CLI, notebooks and the app use): effectively "
        "unlimited, so no face of the owner is throttled. 'anonymous' counts requests without "
        "a valid key per client address (they only ever get 401; the limit bounds floods)",
    )
    default_tier: str = Field(
        default="free",
        doc="WORKBENCH_RATE_LIMIT_DEFAULT_TIER: the tier of keys created without one (the "
        "conventions' Free plan: 60 requests per minute)",
    )
    enabled: bool = Field(default=True, doc="WORKBENCH_RATE_LIMIT_PER_MINUTE=0 turns limits off")

    def per_minute(self, tier: str | None) -> int:
        return self.tiers.get(tier or self.default_tier, self.tiers[self.default_tier])


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
    opentelemetry: bool = Field(
        default=False,
        doc="any OTEL_* variable: FastAPI's native OpenTelemetry stays on (otherwise off: it "
            "looks up the global providers on every request)",
    )
    worker_nice: int = Field(
        default=0, ge=0, le=19,
        doc="WORKBENCH_WORKER_NICE: niceness of local training workers (higher: the server "
            "keeps more CPU under load; benchmarks/status_under_load.py measures both ways)",
    )
    server_url: str | None = Field(
        default=None, doc="WORKBENCH_SERVER_URL: a running server the CLI should talk to"
    )
    owner_idle_s: float = Field(
        default=600.0, gt=0,
        doc="WORKBENCH_OWNER_IDLE_S: an owner the front door started on demand stops after "
            "this many seconds without requests, sockets or runs",
    )
    limits: Limits = Field(default_factory=Limits, doc="the WORKBENCH_MAX_* limits")
    data_roots: list[Path] = Field(
        default_factory=list,
        doc="WORKBENCH_DATA_ROOTS: directories (os.pathsep-separated) that file:// data URLs may "
        "name; default: the data dir (WORKBENCH_DATA) alone",
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_HOSTS),
        doc="WORKBENCH_ALLOWED_HOSTS: hosts this server may contact on a caller's behalf "
        "(dataset_url, global_node_urls, trainer devices, nodes), comma-separated: names, "
        "'.example.org' suffixes, IPs or networks (10.0.0.0/8), or '*'; default loopback only",
    )
    rate_limits: RateLimits = Field(default_factory=RateLimits,
                                    doc="per-key request limits of every /api route")

    webhook_max_attempts: int = Field(
        default=5, ge=1, le=20,
        doc="WORKBENCH_WEBHOOK_MAX_ATTEMPTS: tries per webhook delivery before it is 'failed'",
    )
    webhook_backoff_s: float = Field(
        default=1.0, gt=0,
        doc="WORKBENCH_WEBHOOK_BACKOFF_S: wait before the first retry; doubled for each next one",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, doc="WORKBENCH_WEBHOOK_TIMEOUT_S: one delivery attempt's timeout",
    )
    checkpoint_every: int = Field(
        default=0, ge=0,
        doc="WORKBENCH_CHECKPOINT_EVERY: runs checkpoint every N epochs unless they say "
            "otherwise (checkpoint_every); 0: only when paused",
    )
    auto_resume: bool = Field(
        default=False,
        doc="WORKBENCH_AUTO_RESUME=1: a run its owner's death interrupted is resumed from its "
            "last checkpoint (or from the start) when the next owner starts, unless the run "
            "says otherwise (auto_resume); off: such runs fail 'interrupted'",
    )
    ray_address: str | None = Field(
        default=None,
        doc="WORKBENCH_RAY_ADDRESS: the Ray cluster target 'ray' runs on (e.g. 'ray://head:10001' "
            "or 'head:6379'; its workers need nn-workbench installed); unset: a private local "
            "Ray on loopback, started on the first run",
    )
    ray_num_cpus: int | None = Field(
        default=None, ge=1,
        doc="WORKBENCH_RAY_NUM_CPUS: CPUs of that local Ray, one per concurrent run (default: "
            "the machine's CPU count)",
    )
    compute_price_per_hour: float = Field(
        default=0.0, ge=0,
        doc="WORKBENCH_COMPUTE_PRICE_PER_HOUR: USD per compute-hour; a task's cost is its "
        "run's duration in hours times this, a node's earnings the cost of the tasks it ran",
    )

    @property
    def db_path(self) -> Path:
        return self.home / "workbench.duckdb"

    @property
    def max_body_bytes(self) -> int:
        return self.limits.max_body_bytes

    @property
    def file_roots(self) -> list[Path]:
        """Where file:// data may come from: ``data_roots``, else the data dir."""
        return list(self.data_roots) or [self.data_dir]


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


_LIMIT_ENV = {
    "max_params": "WORKBENCH_MAX_PARAMS",
    "max_activation_bytes": "WORKBENCH_MAX_ACTIVATION_BYTES",
    "max_world_size": "WORKBENCH_MAX_WORLD_SIZE",
    "max_queued_runs": "WORKBENCH_MAX_QUEUED_RUNS",
    "max_download_bytes": "WORKBENCH_MAX_DOWNLOAD_BYTES",
    "max_decompressed_bytes": "WORKBENCH_MAX_DECOMPRESSED_BYTES",
    "max_body_bytes": "WORKBENCH_MAX_BODY_BYTES",
}


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
    values["opentelemetry"] = any(name.startswith("OTEL_") for name in os.environ)
    if nice := _env("WORKBENCH_WORKER_NICE"):
        values["worker_nice"] = int(nice)
    limits = {field: int(raw) for field, name in _LIMIT_ENV.items() if (raw := _env(name))}
    values["limits"] = Limits(**limits)
    if roots := _env("WORKBENCH_DATA_ROOTS"):
        values["data_roots"] = [Path(r).expanduser() for r in roots.split(os.pathsep) if r]
    if hosts := _env("WORKBENCH_ALLOWED_HOSTS"):
        values["allowed_hosts"] = [h.strip() for h in hosts.split(",") if h.strip()]
    if idle := _env("WORKBENCH_OWNER_IDLE_S"):
        values["owner_idle_s"] = float(idle)
    if attempts := _env("WORKBENCH_WEBHOOK_MAX_ATTEMPTS"):
        values["webhook_max_attempts"] = int(attempts)
    if backoff := _env("WORKBENCH_WEBHOOK_BACKOFF_S"):
        values["webhook_backoff_s"] = float(backoff)
    if timeout := _env("WORKBENCH_WEBHOOK_TIMEOUT_S"):
        values["webhook_timeout_s"] = float(timeout)
    if price := _env("WORKBENCH_COMPUTE_PRICE_PER_HOUR"):
        values["compute_price_per_hour"] = float(price)
    values["ray_address"] = _env("WORKBENCH_RAY_ADDRESS")
    if ray_cpus := _env("WORKBENCH_RAY_NUM_CPUS"):
        values["ray_num_cpus"] = int(ray_cpus)
    if every := _env("WORKBENCH_CHECKPOINT_EVERY"):
        values["checkpoint_every"] = int(every)
    values["auto_resume"] = (_env("WORKBENCH_AUTO_RESUME") or "0").lower() in ("1", "true", "yes")
    values["rate_limits"] = _rate_limits()
    return Settings(**values)


# Read on every call, not cached with the settings: launchers and tests set these per process.
WORKER_TOKEN_ENV = "WORKBENCH_WORKER_TOKEN"  # the worker's token, and what a coordinator sends
WORKER_TOKENS_ENV = "WORKBENCH_WORKER_TOKENS"  # a coordinator's per-worker "host:port=token,..."


def worker_token_env() -> str | None:
    """WORKBENCH_WORKER_TOKEN, stripped; None when unset or blank."""
    return (_env(WORKER_TOKEN_ENV) or "").strip() or None


def worker_tokens_env() -> dict[str, str]:
    """WORKBENCH_WORKER_TOKENS as ``{"host:port" (lower case): token}``."""
    tokens = {}
    for entry in (_env(WORKER_TOKENS_ENV) or "").replace(",", " ").split():
        address, sep, token = entry.partition("=")
        if sep and token.strip():
            tokens[address.strip().lower()] = token.strip()
    return tokens


def track_exit_timeout_s() -> float:
    """WORKBENCH_TRACK_EXIT_TIMEOUT_S: how long a tracked script waits at exit for its runs'
    last points to reach the server (default 60)."""
    raw = _env("WORKBENCH_TRACK_EXIT_TIMEOUT_S")
    try:
        return float(raw) if raw is not None else 60.0
    except ValueError:
        raise ValueError(f"WORKBENCH_TRACK_EXIT_TIMEOUT_S must be a number of seconds, "
                         f"got {raw!r}") from None


def _rate_limits() -> RateLimits:
    limits = RateLimits()
    if tier := _env("WORKBENCH_RATE_LIMIT_DEFAULT_TIER"):
        limits.default_tier = tier
    tiers = dict(limits.tiers)
    for item in (_env("WORKBENCH_RATE_LIMIT_TIERS") or "").split(","):
        name, _, number = item.partition("=")
        if name.strip() and number.strip():
            tiers[name.strip()] = int(number)
    if (default := _env("WORKBENCH_RATE_LIMIT_PER_MINUTE")) is not None:
        if int(default) <= 0:
            limits.enabled = False
        else:
            tiers[limits.default_tier] = int(default)
    if limits.default_tier not in tiers:
        raise ValueError(f"WORKBENCH_RATE_LIMIT_DEFAULT_TIER: no tier {limits.default_tier!r}; "
                         f"tiers: {', '.join(tiers)}")
    limits.tiers = tiers
    return limits
