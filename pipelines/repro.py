"""``percept repro``: ``dvc repro`` with one Prefect API shared by every stage.

A ``percept`` stage that runs a flow (ingest, shard, promote) starts and stops its own temporary
Prefect server when ``PREFECT_API_URL`` is unset: about 10 s each, 17 times in a run of eight
tasks. This starts one for the whole run instead (or uses yours when ``PREFECT_API_URL`` is set)
and passes it to every stage through the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.config import Config
from pipelines.remote import configure_dvc_remote


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


def repro(dvc_args: list[str], cfg: Config) -> int:
    """Run ``dvc repro <dvc_args>`` under one Prefect API; its exit status."""
    configure_dvc_remote(cfg)  # s3.bucket set: the S3 remote, so a later `dvc push` goes there
    with prefect_api() as url:
        print(f"percept repro: every stage reports to the Prefect API at {url}", file=sys.stderr)
        env = {**os.environ, "PREFECT_API_URL": url}
        return subprocess.run([sys.executable, "-m", "dvc", "repro", *dvc_args], env=env).returncode
