"""Builds the optional compiled prefilter of the two-edit typo index; the rest is in pyproject.toml.

optional=True: without a C compiler the install goes on and the pure-Python path is used.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("resolverguard.typo._probe", ["resolverguard/typo/_probe.c"], optional=True)])
