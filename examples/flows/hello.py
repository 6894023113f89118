"""The example flow of `make demo`: greets, logs and prints."""

import logging
import time

log = logging.getLogger(__name__)


def hello(name: str = "world", count: int = 3) -> str:
    """Say hello `count` times."""
    for i in range(1, count + 1):
        log.info("hello %s (%d/%d)", name, i, count)
        time.sleep(0.1)
    print(f"greeted {name} {count} times")
    return f"hello {name}"
