"""require_program(name): the path of a real external program, or skip — but fail when CI=true."""

from __future__ import annotations

import os
import shutil

import pytest

# Debian installs daemons (unbound, nsd) in sbin, which a non-root PATH often lacks.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require_program(name: str) -> str:
    """Return the program's path. Missing: pytest.skip locally, pytest.fail when CI=true."""
    path = shutil.which(name) or shutil.which(name, path=_SBIN)
    if path is not None:
        return path
    message = f"{name} is not installed (not on PATH nor in {_SBIN})"
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)
