"""The Jupyter kernel "Bash (sandbox)": every cell's shell in a fresh container."""

__version__ = "0.1.0"
