"""``percept repro``: ``dvc repro`` with one Prefect API and one local Ray shared by every stage.

A ``percept`` stage that runs a flow (ingest, shard, promote) starts and stops its own temporary
Prefect server when ``PREFECT_API_URL`` is unset: about 10 s each, 19 times in a run of nine
tasks; a train stage starts and stops its own local Ray: about 10 s each (measured: ray.init
4.1 s, and the Train controller and worker group start 6 s sooner on a running cluster). This
starts one of each for the whole run instead (or uses yours: ``PREFECT_API_URL``, and
``train.ray_address`` or ``RAY_ADDRESS``) and passes them to every stage through the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

from pipelines.common.schema import Config
from pipelines.services.engine import ray_address, start_local_ray, stop_ray
from pipelines.services.remote import configure_dvc_remote


@contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API URL to use: the environment's, else a temporary server's, stopped on exit."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    try:
        yield server.api_url
    finally:
        server.stop()


@contextmanager
def local_ray(cfg: Config) -> Iterator[dict[str, str]]:
    """``{"RAY_ADDRESS": ...}`` of a local Ray started here and stopped on exit, or nothing when
    the train stages join a cluster of their own (``train.ray_address``, ``$RAY_ADDRESS``)."""
    if ray_address(cfg):
        yield {}
        return
    import ray

    start_local_ray()
    try:
        yield {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    finally:
        stop_ray()


def repro(dvc_args: list[str], cfg: Config) -> int:
    """Run ``dvc repro <dvc_args>`` under one Prefect API and one local Ray; its exit status."""
    configure_dvc_remote(cfg)  # s3.bucket set: the S3 remote, so a later `dvc push` goes there
    with ExitStack() as stack:
        # side by side: the server's start (~6 s) and ray.init (~4 s) each mostly wait
        with ThreadPoolExecutor(1) as pool:
            server = pool.submit(stack.enter_context, prefect_api())
            ray_env = stack.enter_context(local_ray(cfg))
            url = server.result()
        where = f" and the Ray cluster at {ray_env['RAY_ADDRESS']}" if ray_env else ""
        print(f"percept repro: every stage reports to the Prefect API at {url}{where}", file=sys.stderr)
        env = {**os.environ, "PREFECT_API_URL": url, **ray_env}
        return subprocess.run([sys.executable, "-m", "dvc", "repro", *dvc_args], env=env).returncode
