"""The worker process's Runtime, built on first use (after any fork) and kept for later jobs."""

from __future__ import annotations

import os

from core.config import Settings
from core.logs import configure_logging
from core.runtime import Runtime

_runtime: tuple[int, Runtime] | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        settings = Settings.from_env()
        configure_logging("worker", settings.log_level)
        _runtime = (os.getpid(), Runtime(settings))
    return _runtime[1]
