"""A flow failing on bad input logs one line; a bug keeps its traceback."""

import logging

import pytest

from pipelines.errors import PREFECT_RUN_LOGGERS, OneLineUserErrors, UserError, one_line_user_errors
from pipelines.ingest import NothingUsable

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
