"""A tiny supervisor for runs of the process provider.

    python -m skylane.adapters.process_supervisor --exit-file PATH -- ARGV...

It starts ARGV as its child (same environment, working directory and stdio), waits for it and
then writes `{"exit_code": N, "ended_at": ISO-8601, "pid": <supervisor pid>}` atomically
(temporary file + `os.replace`) to PATH, so the exit code of a run stays readable after the
control plane that started it has restarted. It exits with the child's code; a child killed by
signal S is recorded as `-S` and gives exit status `128 + S`. A command that cannot be started
is recorded as 127 (not found) or 126 (not executable), like a shell does.

The supervisor ignores SIGTERM and SIGINT while it waits: a cancel is sent to the whole process
group (the adapter starts us in a new session), so the child receives it directly and the
supervisor stays to record how the child ended.

This file imports only the standard library: the adapter runs it by path with `python -I`, so
it neither imports skylane (and its dependencies) nor puts the run's working directory on
`sys.path`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

USAGE = "usage: process_supervisor --exit-file PATH -- ARGV..."


_received: list[int] = []


def _record(signum: int, frame: object) -> None:
    """Remember the signal and otherwise ignore it. Unlike SIG_IGN, a handler is reset to the
    default by exec, so the child still gets the default SIGTERM/SIGINT behaviour."""
    _received.append(signum)


def write_exit_file(path: str, exit_code: int) -> None:
    data = {
        "exit_code": exit_code,
        "ended_at": datetime.now(UTC).isoformat(),
        "pid": os.getpid(),
    }
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def parse_args(args: list[str]) -> tuple[str, list[str]]:
    if len(args) < 4 or args[0] != "--exit-file" or args[2] != "--":
        raise SystemExit(f"{USAGE}\n")
    return args[1], args[3:]


def main(args: list[str] | None = None) -> int:
    exit_file, argv = parse_args(sys.argv[1:] if args is None else args)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _record)
    try:
        child = subprocess.Popen(argv)
    except FileNotFoundError:
        print(f"skylane: command not found: {argv[0]}", file=sys.stderr, flush=True)
        code = 127
    except PermissionError:
        print(f"skylane: command is not executable: {argv[0]}", file=sys.stderr, flush=True)
        code = 126
    except OSError as exc:
        print(f"skylane: cannot start {argv[0]}: {exc.strerror}", file=sys.stderr, flush=True)
        code = 126
    else:
        # A signal that came while the child was being started may have missed it (it is
        # caught, then lost by exec): pass it on.
        if _received:
            child.send_signal(_received[-1])
        code = child.wait()  # retried on EINTR (PEP 475)
    write_exit_file(exit_file, code)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
