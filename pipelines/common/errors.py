"""Errors a user acts on from their message alone, and the log filter that keeps them one line.

A flow that raises one (no train image left, a checksum that does not match, a file that is not a
percept model) fails with that message. Prefect's engine would log the Python traceback above it:
a screen of its own frames that says nothing to the user and pushes the line that does out of
view. The filter drops the traceback for these errors only; a bug keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import reprlib
from typing import Any

# The loggers of Prefect's flow and task engines ("Encountered exception during execution").
PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class UserError(Exception):
    """Bad input or settings, explained in the user's terms by the message."""


# A message quotes values, never whole ones: a params.yaml of a few YAML aliases can stand for
# millions of items, and a message that quotes them is a screen no one reads.
QUOTE_LIMIT = 100  # characters of a value's repr that an error quotes
LINE_LIMIT = 400  # characters of one reported problem
MESSAGE_LIMIT = 4000  # characters of a whole ConfigError message


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


class ConfigError(UserError, ValueError):
    """params.yaml is missing, malformed or holds an impossible value. The message is bounded
    (MESSAGE_LIMIT), whatever value or path it quotes."""

    def __init__(self, message: str) -> None:
        super().__init__(clip(str(message), MESSAGE_LIMIT))


_REPR = reprlib.Repr()  # Python 3.11's takes no arguments
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, QUOTE_LIMIT, 40, QUOTE_LIMIT


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """A short ``repr(value)``, with the size of what it leaves out: reprlib elides long strings
    and collections as it goes, so a few YAML aliases standing for millions of items never
    build a huge message."""
    text = _REPR.repr(value)
    if isinstance(value, str) and len(value) > limit:
        return f"{text[:limit]}… ({len(value)} characters)"
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 6:  # reprlib's default cut
        return f"{text[:limit]}… ({type(value).__name__} of {len(value)} items)"
    return text[:limit] + "…" if len(text) > limit else text


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
