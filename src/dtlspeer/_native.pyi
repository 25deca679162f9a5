# The cffi-compiled extension (build_mbedtls.py). cffi's ffi and lib objects
# are dynamic: their attributes come from the C declarations at build time.
from typing import Any

ffi: Any
lib: Any
