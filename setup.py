"""Builds the compiled parts (`pip install -e .` builds them in place); the rest is in pyproject.toml.

- typo/_probe: the prefilter of the two-edit typo index;
- _fastudp: the UDP hot loop (recvmmsg/sendmmsg; Linux only), see resolverguard/fastpath.py.
Locally they are optional: without a C compiler the install goes on and the pure-Python twins are used.
Under CI=true a failed build fails the install (and the C-vs-Python tests fail rather than skip), so CI
always tests the C source of this commit; compiled files are never committed (.gitignore).
"""

import os
import sys

from setuptools import Extension, setup

optional = os.environ.get("CI", "").strip().lower() != "true"
extensions = [Extension("resolverguard.typo._probe", ["resolverguard/typo/_probe.c"], optional=optional)]
if sys.platform.startswith("linux"):
    extensions.append(Extension("resolverguard._fastudp", ["resolverguard/_fastudp.c"], optional=optional))
setup(ext_modules=extensions)
