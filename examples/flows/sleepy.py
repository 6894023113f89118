"""A long flow, to try `skylane run cancel`."""

import logging
import time

log = logging.getLogger(__name__)


def sleepy(seconds: float = 300) -> None:
    log.info("sleeping for %s seconds", seconds)
    time.sleep(seconds)
    log.info("woke up")
