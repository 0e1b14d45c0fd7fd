"""Shared test configuration: the fuse-harness plugin is loaded through its entry point."""

pytest_plugins = ["pytester"]
