"""The modelyard server: config, registry, workers, HTTP surfaces and CLI."""

__version__ = "0.1.0"
