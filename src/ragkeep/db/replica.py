"""Which server process this is, as rows shared by the replicas name it."""

from __future__ import annotations

import os
import socket


def replica_name() -> str:
    """``host:pid``: which server process wrote a row (several may share a host): maintenance
    runs, metrics instances, housekeeping claims."""
    return f"{socket.gethostname()}:{os.getpid()}"
