"""Where the data half's per-item work runs: Ray tasks (the default) or this one process.

``ingest`` and ``shard`` each have one CPU-bound function applied to many small items (a file to
validate, an image to cut into samples). ``data_engine`` maps it in order:

- ``ray``: Ray tasks on a local Ray started here (``data.workers`` CPUs), or on the cluster that
  ``train.ray_address`` / ``$RAY_ADDRESS`` names (``percept repro`` passes its run-wide Ray the
  same way), the same code. Ray places the tasks on any node; the results come back to this
  process in item order, so the files written from them do not depend on where or in which order
  the work ran, and a bounded window of tasks in flight keeps memory flat, whatever the count.
- ``local``: a plain ``map`` in this process; the reference the Ray path must equal byte for byte.

Why Ray tasks, and not Ray Data or prefect-ray's ``RayTaskRunner``: all three were measured on
this 2-core machine cutting sr_x4's 283 train images into samples (docs/operations.md, "The data half on
Ray"): Ray tasks ran 70 images/s, Ray Data 38 (its streaming executor polls in this process,
which also writes the shards, and converts every block to Arrow), RayTaskRunner 4.4 (a Prefect
task run, with its API calls, per image). Prefect stays the orchestrator: the flow is a Prefect
flow and its steps Prefect tasks; the per-item work below them is Ray's.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pipelines.common.env import apply_local_ray_defaults
from pipelines.common.schema import Config
from pipelines.services.ports import free_port

log = logging.getLogger(__name__)

# mapper(fn, items, memory=None): fn over items, results in item order; ``memory`` (bytes) is what one
# call may use at most, so Ray runs no more calls at once than the cluster's memory holds.
OrderedMap = Callable[..., Iterator[Any]]


def ray_address(cfg: Config) -> str | None:
    """The cluster percept joins, or None to start a local Ray."""
    address = cfg.train.ray_address or os.environ.get("RAY_ADDRESS")
    if address and address.startswith(("http://", "https://")):
        address = os.environ.get("RAY_ADDRESS", "auto")  # a job's driver: Ray names its cluster
    return address or None


API_SERVER_ADDRESS_ENV = "RAY_API_SERVER_ADDRESS"  # read by Ray's state API before any address it is given
_local_temp_dirs: list[str] = []  # what local_temp_dir made in this process and stop_ray removes


def local_temp_dir() -> str:
    """A fresh /tmp/rayXXXX for a local Ray: short, as Ray's unix socket paths must stay under 107
    bytes (the default under a long $TMPDIR can exceed it). ``stop_ray`` removes it."""
    path = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    _local_temp_dirs.append(path)
    return path


def init_ray(cfg: Config, num_cpus: int | None = None) -> bool:
    """Join the configured cluster or start a local Ray; True when this call connected (then the
    caller ends it with ``stop_ray``), False when Ray was already up in this process."""
    import ray

    if ray.is_initialized():
        return False
    address = ray_address(cfg)
    if address:
        ray.init(address=address, configure_logging=False)
    else:
        start_local_ray(num_cpus)
    return True


def start_local_ray(num_cpus: int | None = None) -> None:
    """``ray.init`` of a local Ray in its own short temp folder, with percept's quiet defaults;
    end it with ``stop_ray``."""
    import ray

    apply_local_ray_defaults()  # read by the raylet and the Train controllers it will start
    # Ray Train's placement-group cleaner (a detached actor) asks Ray's state API whether the
    # controller it guards is alive. Given no address, that API looks for *the* Ray of this
    # machine and raises once two are up (a second percept, a test's cluster): the cleaner's
    # thread dies, and a trial that Tune stops leaves its workers' CPUs reserved, so the next
    # trials wait for them forever (CI, 2026-12-06: a resumed search hung). The API's address,
    # this Ray's own dashboard, reaches the raylet and the workers it starts through the
    # environment they inherit at ray.init; this process gets its own back afterwards, so a job
    # client here still goes where it is told.
    port, before = free_port(), os.environ.get(API_SERVER_ADDRESS_ENV)
    os.environ[API_SERVER_ADDRESS_ENV] = f"http://127.0.0.1:{port}"
    try:
        ray.init(num_cpus=num_cpus, _temp_dir=local_temp_dir(), configure_logging=False,
                 include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port)
    finally:
        if before is None:
            del os.environ[API_SERVER_ADDRESS_ENV]
        else:
            os.environ[API_SERVER_ADDRESS_ENV] = before



def stop_ray() -> None:
    """``ray.shutdown()``, then remove the temp folders of the local Rays this process started
    (sockets, session logs, spilled objects: about 2 MB a run, left in /tmp by Ray otherwise; the
    workers' logs were already forwarded to this process's stderr)."""
    import ray

    ray.shutdown()
    while _local_temp_dirs:
        shutil.rmtree(_local_temp_dirs.pop(), ignore_errors=True)


@contextlib.contextmanager
def data_engine(cfg: Config) -> Iterator[OrderedMap]:
    """An ordered map for ``cfg.data.engine``; a Ray started here is stopped on the way out."""
    if cfg.data.engine == "local":
        yield lambda fn, items, memory=None: map(fn, items)
        return
    started = init_ray(cfg, num_cpus=cfg.data.workers or None)
    try:
        yield lambda fn, items, memory=None: ray_map(fn, items, cfg.data.items_per_task, memory)
    finally:
        if started:
            stop_ray()


def ray_map(fn: Callable[[Any], Any], items: Iterable[Any], items_per_task: int, memory: int | None) -> Iterator[Any]:
    """``map(fn, items)`` as Ray tasks of ``items_per_task`` items; results in item order.

    At most two tasks per CPU of the cluster are in flight: that is the backpressure which keeps
    this process's memory (results waiting to be written) bounded whatever the number of items.
    """
    import ray

    items = list(items)
    if not items:
        return
    options: dict[str, Any] = {"num_cpus": 1}
    if memory:  # a logical resource: Ray starts no more tasks at once than fit in a node's memory
        largest = max((n["Resources"].get("memory", 0) for n in ray.nodes() if n["Alive"]), default=0)
        if memory > largest:  # more than any node has: the tasks would wait forever
            log.warning("a data task may use %d MB, more than the largest node's %d MB: asking for that instead",
                        memory // 2**20, largest // 2**20)
            memory = int(largest)
        options["memory"] = memory
    remote = ray.remote(**options)(_apply_chunk)
    window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    fn_ref = ray.put(fn)  # shipped once, not with every task
    pending: collections.deque = collections.deque()
    for start in range(0, len(items), items_per_task):
        pending.append(remote.remote(fn_ref, items[start : start + items_per_task]))
        if len(pending) >= window:
            yield from ray.get(pending.popleft())
    while pending:
        yield from ray.get(pending.popleft())


def _apply_chunk(fn: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    return [fn(item) for item in chunk]
