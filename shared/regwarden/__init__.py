"""regwarden: keep container registries safe and clean."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("regwarden")
except PackageNotFoundError:  # running from a source tree without installation (Lambda layer)
    __version__ = "0.1.0"

USER_AGENT = f"regwarden/{__version__}"

__all__ = ["USER_AGENT", "__version__"]
