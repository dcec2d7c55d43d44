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


def apply_quiet_defaults() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
