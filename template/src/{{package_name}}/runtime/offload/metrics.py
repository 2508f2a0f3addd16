"""The offload pool's Prometheus metrics (``docs/runtime/offloading.md`` explains the alerts).

Every series carries ``executor``: a dashboard can tell the kinds apart across deployments.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ..metrics import DURATION_BUCKETS

IN_FLIGHT = Gauge(
    "offload_in_flight",
    "Worker slots busy with a call right now (abandoned threads included).",
    ["executor"],
)
QUEUED = Gauge(
    "offload_queued", "Offloaded calls accepted and waiting for a free worker.", ["executor"]
)
WORKERS = Gauge("offload_workers", "Worker threads or processes in the pool.", ["executor"])
RUN_LIMIT = Gauge(
    "offload_run_limit_seconds",
    "The longest a call may run before it is stopped (0: no limit).",
    ["executor"],
)
OLDEST_RUNNING = Gauge(
    "offload_oldest_running_seconds",
    "How long the longest-running call has been running (0 when the pool is idle).",
    ["executor"],
)
ABANDONED_THREADS = Gauge(
    "offload_abandoned_threads",
    "Worker threads still running a call nobody waits for (timed out or cancelled).",
    ["executor"],
)
REJECTED = Counter(
    "offload_rejected",
    "Offloaded calls rejected at once because workers and queue were full.",
    ["executor"],
)
TIMED_OUT = Counter(
    "offload_timed_out",
    "Calls that ran out of time, by stage: queued, not_started (too little time left), running.",
    ["executor", "stage"],
)
CANCELLED = Counter(
    "offload_cancelled",
    "Calls whose caller went away, by stage: queued (dropped) or running (stopped/abandoned).",
    ["executor", "stage"],
)
KILLED = Counter(
    "offload_killed",
    "Worker processes killed to stop a call, by reason: timeout or cancelled.",
    ["executor", "reason"],
)
DURATION = Histogram(
    "offload_duration_seconds",
    "Time from submission to result of offloaded calls, by outcome.",
    ["executor", "outcome"],
    buckets=DURATION_BUCKETS,
)
WORKER_CRASHES = Counter(
    "offload_worker_crashes",
    "Offload worker processes replaced, by reason: crash, timeout, cancelled, dead, shutdown.",
    ["executor", "reason"],
)
