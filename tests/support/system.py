"""System tools some tests need (HAProxy, docker-compose): skipped on a laptop without them,
a failure under CI (``CI=true``), where ``.ci/run`` installs them."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, install_hint: str) -> str:
    """The tool's path; else skip with the install command, or fail when ``CI=true``."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed: {install_hint}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: .ci/run installs it)")
    pytest.skip(message)


def require_citus() -> None:
    """Citus built into the wheel's bundle; else skip with the build command, or fail when ``CI=true``
    (``.ci/run`` builds it)."""
    from ragkeep.db.citus import citus_built

    if citus_built():
        return
    message = "Citus is not built: run ../shared/tools/build-citus.sh (builds Citus into .venv, ~90 s)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: .ci/run builds it)")
    pytest.skip(message)
