"""The package's version, in a module of its own: the manifest records it (job.json)
without importing the whole package from inside it."""

__version__ = "0.1.0"
