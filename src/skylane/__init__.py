"""skylane: push runs of Python code straight onto serverless container platforms."""

__version__ = "0.1.0"
