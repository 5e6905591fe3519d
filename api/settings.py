"""Service settings from the environment (``O2O_*``), via pydantic-settings.

``o2o serve`` passes its options through the same variables, so every worker process
(uvicorn starts them afresh) reads one configuration.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracking.runtime import DEFAULT_GC_THRESHOLDS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="O2O_", extra="ignore")

    secret: SecretStr | None = None
    """Token signing key (``O2O_SECRET``); required."""
    store: str = "memory"
    """``memory`` (one process) or a ``redis://`` URL (several workers, durable)."""
    redis_prefix: str = "o2o"
    redis_connections: int = Field(64, gt=0)
    """Redis connections per worker; requests wait for a free one rather than fail."""
    events_maxlen: int = Field(100_000, gt=0)
    """Events kept in the global stream (resume window for the hub)."""
    topic_maxlen: int = Field(100, gt=0)
    """Events kept per topic (order, courier, area). Couriers' topics carry their 1 Hz
    positions, so with thousands of couriers a deep per-topic history costs gigabytes;
    an order's whole life fits in far fewer, and a client that falls further behind
    re-syncs from a snapshot."""
    dispatch: bool = True
    """Run the dispatcher in this service (one worker leads at a time)."""
    dispatch_process: bool = True
    """Run it in a child process of the leading worker, so a re-plan (OR-Tools holds the
    GIL throughout) never stalls that worker's requests and sockets."""
    otel: bool = False
    """FastAPI's own OpenTelemetry spans, metrics and logs (``O2O_OTEL=1``), for a process
    with an OpenTelemetry SDK configured; off, a request skips the check for one.
    ``/metrics`` (Prometheus) is there either way."""
    max_body_bytes: int = Field(1_000_000, gt=0)
    max_batch: int = Field(1000, gt=0)
    position_interval_s: float = Field(1.0, ge=0)
    heartbeat_s: float = Field(15.0, gt=0)
    send_timeout_s: float = Field(10.0, gt=0)
    ws_queue: int = Field(1000, gt=0)
    stale_position_s: float = Field(5.0, ge=0)
    """A worker that reads a position this long after it was appended does not fan it
    out (it has fallen behind: the courier's next fix follows); 0 fans out every one.
    Status and other events are never shed. ``o2o_hub_lag_seconds`` shows the lag."""
    log_read_interval_s: float = Field(0.01, ge=0, le=1)
    """On Redis, each worker's hub (and the dispatcher's reader) reads the event log at
    most once per this many seconds when caught up, so events come in batches; 0 reads
    as soon as anything arrives. See :class:`tracking.redis_events.RedisEventLog`."""
    dispatch_position_every_s: float = Field(5.0, ge=0)
    """The dispatcher takes one position per courier per this many seconds of the 1 Hz
    fixes (it re-times ETAs from them); 0 takes every fix. See
    :class:`tracking.dispatch_loop.PositionSampler`."""
    gc_thresholds: tuple[PositiveInt, PositiveInt, PositiveInt] = DEFAULT_GC_THRESHOLDS
    """The garbage collector's thresholds in each worker (``O2O_GC_THRESHOLDS='[50000,
    20, 10]'``; CPython's own are ``[700, 10, 10]``). See :mod:`tracking.runtime`."""
    share_ttl_s: float = Field(6 * 3600.0, gt=0)
    public_url: str = ""
    """Base URL for share links (empty: links are relative paths)."""
    replan_every_s: float = Field(30.0, gt=0)
    solve_time_limit_s: float = Field(1.0, gt=0)
    whatif_heartbeat_s: float = Field(5.0, gt=0)
    """How often the worker running a what-if refreshes its published view
    (:data:`api.whatif.HEARTBEAT_S`); other workers report a run whose heartbeat is
    :data:`api.whatif.STALE_HEARTBEATS` intervals old as failed (its worker was lost)."""
