"""The Azure function app's functions, indexed once per process.

azure-functions refuses a second `app.get_functions()` on one app ("does not have a unique
function name"), as the worker indexes an app once; every test that reads the app's
functions or their bindings in one process (an xdist worker runs many) goes through here.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def app_functions() -> tuple[Any, ...]:
    """`functions.azure.function_app.app.get_functions()`, called once."""
    from functions.azure.function_app import app

    return tuple(app.get_functions())
