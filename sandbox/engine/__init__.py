"""The container engine: one class that creates, runs, commits and removes."""

from sandbox.engine.core import BASE_REF, Engine
from sandbox.engine.running import Running

__all__ = ["BASE_REF", "Engine", "Running"]
