"""End-to-end fixtures: the same stack and per-test topic prefixes as the integration tests."""

from tests.integration.conftest import base_settings, settings

__all__ = ["base_settings", "settings"]
