"""A flow failing on bad input logs one line; a bug keeps its traceback."""

import logging

import pytest

from pipelines.common.errors import PREFECT_RUN_LOGGERS, OneLineUserErrors, RetriesAsWarnings, UserError, one_line_user_errors, show_client_retries
from pipelines.stages.ingest import NothingUsable

pytestmark = pytest.mark.unit


class Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("error, traceback_kept", [(NothingUsable("no train image left"), False),
                                                   (RuntimeError("a bug"), True)])
def test_prefect_run_loggers_drop_the_traceback_of_user_errors_only(error, traceback_kept):
    one_line_user_errors()
    one_line_user_errors()  # idempotent: one filter per logger
    for name in PREFECT_RUN_LOGGERS:
        logger, keep = logging.getLogger(name), Keep()
        assert sum(isinstance(f, OneLineUserErrors) for f in logger.filters) == 1
        logger.addHandler(keep)
        try:
            try:
                raise error
            except Exception:
                logger.exception("Encountered exception during execution: %r", error)
        finally:
            logger.removeHandler(keep)
        (record,) = keep.records
        assert (record.exc_info is not None) == traceback_kept
        assert repr(error) in record.getMessage()
    assert isinstance(NothingUsable("x"), (UserError, ValueError))  # the CLI still catches it as a ValueError


@pytest.fixture
def flaky_server():
    """A local HTTP server that answers its first request with 503 (retry at once), then 200."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = [503]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            code = answers.pop() if answers else 200
            self.send_response(code)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def kept_records(name: str, request) -> list[logging.LogRecord]:
    keep = Keep()
    logging.getLogger(name).addHandler(keep)
    request.addfinalizer(lambda: logging.getLogger(name).removeHandler(keep))
    return keep.records


def test_a_request_that_urllib3_retried_is_logged_as_a_warning(flaky_server, request, monkeypatch):
    """MLflow's and boto's HTTP clients retry through urllib3, which says so at DEBUG only."""
    import urllib3

    # what show_client_retries sets for Prefect stays in this test, not in later tests' children
    monkeypatch.setenv("PREFECT_LOGGING_LOGGERS_PREFECT_CLIENT_LEVEL", "DEBUG")
    show_client_retries()
    records = kept_records("urllib3.connectionpool", request)
    retry = urllib3.Retry(total=2, status_forcelist=[503], backoff_factor=0)
    assert urllib3.PoolManager(retries=retry).request("GET", flaky_server + "/api").status == 200
    assert [r.levelname for r in records] == ["WARNING"]  # the retry; its other DEBUG lines dropped
    assert "/api" in records[0].getMessage()


def test_a_request_that_prefects_client_retried_is_logged_as_a_warning(flaky_server):
    """As in a percept command: the filter is set before Prefect's first import configures its
    logging (which sets its client logger's level again)."""
    import subprocess
    import sys

    script = ("import logging, sys\n"
              "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
              "from pipelines.common.errors import show_client_retries\n"
              "show_client_retries()\n"
              "from prefect import flow\n"
              "from prefect.client.base import PrefectHttpxSyncClient\n"
              "with PrefectHttpxSyncClient(base_url=sys.argv[1]) as client:\n"
              "    assert client.get('/health').status_code == 200\n")
    done = subprocess.run([sys.executable, "-c", script, flaky_server], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "prefect.client" in line]
    assert len(lines) == 1 and "WARNING" in lines[0], done.stderr  # the retry; "Connecting to API" dropped
    assert "503" in lines[0] and "Another attempt will be made" in lines[0]


def test_verbose_keeps_the_clients_other_debug_records():
    logger = logging.getLogger("percept-test-client")
    logger.addFilter(RetriesAsWarnings("Retry: ", verbose=True))
    quiet = RetriesAsWarnings("Retry: ", verbose=False)
    debug = logger.makeRecord(logger.name, logging.DEBUG, __file__, 1, "Starting new HTTP connection", (), None)
    assert logger.filter(debug) and not quiet.filter(debug)
