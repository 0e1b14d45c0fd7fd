"""FUSE protocol layouts and filesystem backends (no transport code)."""
