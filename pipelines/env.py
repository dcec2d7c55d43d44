"""Quiet, offline defaults for the libraries percept drives; a user's own setting wins."""

from __future__ import annotations

import os

QUIET_ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def set_defaults(values: dict[str, str]) -> None:
    """Set each variable the environment does not already set."""
    for key, value in values.items():
        os.environ.setdefault(key, value)


def apply_quiet_defaults() -> None:
    set_defaults(QUIET_ENV)


# Only for a Ray that percept starts itself on this machine (not a cluster it joins): on a
# laptop-sized host Ray's background pollers compete with the training threads for the same
# cores. Prometheus metrics export and the preemption watcher (a local Ray is never preempted)
# are off, and Ray Train's controller polls worker health every 5 s instead of 2 s. Measured by
# benchmarks/train.py on 2 cores: Ray's daemons drop from ~0.12 to ~0.10 cores and the overhead
# against a plain loop from +12.3 % to +8.8 % (median of 3). A user's own environment settings win.
LOCAL_RAY_ENV = {
    "RAY_enable_metrics_collection": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "5",
}


def apply_local_ray_defaults() -> None:
    set_defaults(LOCAL_RAY_ENV)
