"""A flow that fails, to see a FAILED run with its traceback."""

import logging

log = logging.getLogger(__name__)


def broken(divisor: int = 0) -> float:
    log.info("about to divide by %d", divisor)
    return 1 / divisor
