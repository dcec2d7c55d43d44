"""Errors a user acts on from their message alone, and the log filter that keeps them one line.

A flow that raises one (no train image left, a checksum that does not match, a file that is not a
percept model) fails with that message. Prefect's engine would log the Python traceback above it:
a screen of its own frames that says nothing to the user and pushes the line that does out of
view. The filter drops the traceback for these errors only; a bug keeps its traceback.
"""

from __future__ import annotations

import logging
import os

# The loggers of Prefect's flow and task engines ("Encountered exception during execution").
PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class UserError(Exception):
    """Bad input or settings, explained in the user's terms by the message."""


class OneLineUserErrors(logging.Filter):
    """Log a UserError's message without its traceback (Prefect's own line names the error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info = record.exc_text = None
        return True


def one_line_user_errors() -> None:
    """Install the filter on Prefect's run loggers (once per process)."""
    for name in PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineUserErrors) for f in logger.filters):
            logger.addFilter(OneLineUserErrors())


# The clients that retry a request to a server (Prefect's API client; urllib3 under MLflow's and
# boto's) log each retry at DEBUG, so a stage that rode out a server outage leaves no trace of it.
# Each logger and the text of its retry record:
RETRY_RECORDS = {"prefect.client": "Another attempt will be made", "urllib3.connectionpool": "Retry: "}


class RetriesAsWarnings(logging.Filter):
    """Pass a client's retry records as WARNING; its other DEBUG records only when ``verbose``."""

    def __init__(self, marker: str, verbose: bool) -> None:
        super().__init__()
        self.marker, self.verbose = marker, verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        if self.marker in str(record.msg):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        return self.verbose


def show_client_retries(verbose: bool = False) -> None:
    """Log every retried request to a server as a warning (once per process).

    The records are made at DEBUG, so their loggers must pass DEBUG and the filter picks. Prefect
    sets its client logger's level whenever it configures logging (at its first import, which
    comes later), from this variable; the processes this one starts inherit it and log their
    retries at DEBUG."""
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_CLIENT_LEVEL", "DEBUG")
    for name, marker in RETRY_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, RetriesAsWarnings) for f in logger.filters):
            logger.setLevel(logging.DEBUG)
            logger.addFilter(RetriesAsWarnings(marker, verbose))
