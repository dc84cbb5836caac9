"""Builds the optional compiled parts; the rest is in pyproject.toml.

optional=True: without a C compiler the install goes on and the pure-Python paths are used.
- typo/_probe: the prefilter of the two-edit typo index;
- _fastudp: the UDP hot loop (recvmmsg/sendmmsg; Linux only), see resolverguard/fastpath.py.
"""

import sys

from setuptools import Extension, setup

extensions = [Extension("resolverguard.typo._probe", ["resolverguard/typo/_probe.c"], optional=True)]
if sys.platform.startswith("linux"):
    extensions.append(Extension("resolverguard._fastudp", ["resolverguard/_fastudp.c"], optional=True))
setup(ext_modules=extensions)
