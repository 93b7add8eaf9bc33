"""Providers start and stop instances: `local` (child processes), `static` (fixed URLs)."""

from runtimes.providers.base import PROVIDERS, Provider
from runtimes.providers.local import LocalProvider
from runtimes.providers.static import StaticProvider

__all__ = ["PROVIDERS", "LocalProvider", "Provider", "StaticProvider"]
