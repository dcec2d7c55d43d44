"""Errors a user acts on from their message alone, and the log filter that keeps them one line.

A flow that raises one (no train image left, a checksum that does not match, a file that is not a
percept model) fails with that message. Prefect's engine would log the Python traceback above it:
a screen of its own frames that says nothing to the user and pushes the line that does out of
view. The filter drops the traceback for these errors only; a bug keeps its traceback.
"""

from __future__ import annotations

import logging

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
