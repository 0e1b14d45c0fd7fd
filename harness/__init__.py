"""fuse-harness: build, boot and test kernels for FUSE-over-io-uring."""

__version__ = "0.1.0"
