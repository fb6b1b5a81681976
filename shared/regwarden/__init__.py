"""regwarden: keep container registries safe and clean."""

__version__ = "0.1.0"
"""The one place the version is written: pyproject.toml reads it from here (setuptools'
`attr:`), so the installed metadata and this agree. A literal rather than
`importlib.metadata.version("regwarden")`, which walked sys.path's distributions on every
cold start (and has no metadata to read in a bundle built from the source tree)."""

USER_AGENT = f"regwarden/{__version__}"

__all__ = ["USER_AGENT", "__version__"]
