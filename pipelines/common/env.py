"""Quiet, offline, patient defaults for the libraries percept drives; a user's own setting wins."""

from __future__ import annotations

import ctypes
import os
import sys

QUIET_ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # A Prefect server whose database restarts answers 500 until it is back: retry those too
    # (5 times, backing off to 30 s: about a minute), as the MLflow client already does.
    "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500",
    # The temporary server a stage starts waits 20 s for its API by default: on 2 busy cores (a
    # test suite or an install beside it) that ran out once and failed `make run` at its start.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Ray Tune's newer console output prints its experiment table on stdout even at verbose=0;
    # the older one is silent there (`percept tune` prints a line per report and its own table).
    "RAY_AIR_NEW_OUTPUT": "0",
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
# are off. Measured by benchmarks/train.py on 2 cores: Ray's daemons drop from ~0.12 to ~0.10
# cores and the overhead against a plain loop from +12.3 % to +8.8 % (median of 3). Ray Train's
# controller learns that training ended at its next poll of the workers: every second here, not
# every 2 s (Ray's default) or 5 s (this file's before): a 450-step deblur stage ended 4.7 s
# sooner than at 5 s, at the same samples/s (155.6 against 151.9). A user's own settings win.
LOCAL_RAY_ENV = {
    "RAY_enable_metrics_collection": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1",
}


def apply_local_ray_defaults() -> None:
    set_defaults(LOCAL_RAY_ENV)


# glibc gives every freed block above its mmap threshold (128 KiB, rising to 32 MiB at most) back
# to the kernel at once, so each whole-image activation is page-faulted in again on the next call;
# a thread with its own arena (Ray Train's loop thread) does the same for blocks over 64 MiB.
# Keeping freed memory (both thresholds 1 GiB, one arena) removed the faults on this 2-core VM:
# a VGG pass over a 500x480 image went from 0.61 to 0.37 s, the Ray training loop from 9.5 to
# 11.0 samples/s (benchmarks/train.py). GLIBC_TUNABLES reaches the processes started from here
# (dvc's stages, a local Ray's workers); mallopt sets the same in this one, already running.
KEEP_FREED_BYTES = 1 << 30
MALLOC_TUNABLES = (f"glibc.malloc.mmap_threshold={KEEP_FREED_BYTES}:"
                   f"glibc.malloc.trim_threshold={KEEP_FREED_BYTES}:glibc.malloc.arena_max=1")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt parameters, from malloc.h


def keep_freed_memory() -> None:
    """Apply ``MALLOC_TUNABLES`` here and to child processes, unless GLIBC_TUNABLES is set already."""
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return  # not glibc (musl, say): its allocator keeps its own policy
    os.environ["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    for param, value in ((M_MMAP_THRESHOLD, KEEP_FREED_BYTES), (M_TRIM_THRESHOLD, KEEP_FREED_BYTES), (M_ARENA_MAX, 1)):
        mallopt(param, value)
