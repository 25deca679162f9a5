"""setuptools entry point: only hooks the cffi build (see build_mbedtls.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from build_mbedtls import BuildExt
from setuptools import setup

setup(
    cffi_modules=["build_mbedtls.py:ffibuilder"],
    cmdclass={"build_ext": BuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
