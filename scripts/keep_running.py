"""`make run`'s restart loop around one Procfile command (honcho has none, and stops the whole
stack when one process exits): `python -m scripts.keep_running NAME COMMAND`.

The command runs under /bin/sh as honcho would run it; when it exits, it is started again
after a wait that doubles from RESTART_FIRST_S up to RESTART_CAP_S, and starts over at the
first once a run lasted STEADY_S. SIGTERM or SIGINT ends the loop: honcho signals the whole
process group, so the command has the signal too and is only waited for. The production
Procfile runs each command alone; the platform restarts it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

RESTART_FIRST_S = 1.0
RESTART_CAP_S = 30.0
STEADY_S = 60.0


def say(message: str) -> None:
    print(message, flush=True)


class Loop:
    def __init__(self, name: str, command: str) -> None:
        self.name = name
        self.command = command
        self.stopping = False

    def stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        delay = RESTART_FIRST_S
        while True:
            started = time.monotonic()
            child = subprocess.Popen(["/bin/sh", "-c", f"exec {self.command}"])
            say(f"==> {self.name} started (pid {child.pid})")
            code = child.wait()
            if self.stopping:
                return code
            if time.monotonic() - started >= STEADY_S:
                delay = RESTART_FIRST_S
            say(f"==> {self.name} (pid {child.pid}) exited with {code}; restart in {delay:.0f} s")
            if not self._wait(delay):
                return 0
            delay = min(delay * 2, RESTART_CAP_S)

    def _wait(self, seconds: float) -> bool:
        """Sleeps `seconds` unless a stop comes first; answers whether to go on."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))
        return not self.stopping


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.exit("usage: python -m scripts.keep_running NAME COMMAND")
    return Loop(argv[1], argv[2]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
