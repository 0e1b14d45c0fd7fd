"""Kconfig verification on the real source tree of the target (no VM needed)."""

import pytest

from harness import kconfig
from harness.errors import KconfigError


def test_dropped_option_is_named_with_its_dependency(kernel, tmp_path):
    frag = tmp_path / "bad.config"
    # FUSE_IO_URING needs FUSE_FS: switching FUSE_FS (and VIRTIO_FS) off must drop it, and say why.
    frag.write_text("CONFIG_FUSE_IO_URING=y\n# CONFIG_FUSE_FS is not set\n# CONFIG_VIRTIO_FS is not set\n")
    with pytest.raises(KconfigError) as exc:
        kconfig.configure(kernel.tree, tmp_path / "build", [frag], ["make", f"O={tmp_path / 'build'}"],
                          tmp_path / "kconfig.log")
    msg = exc.value.message
    assert "CONFIG_FUSE_IO_URING=y (from bad.config) is not set after olddefconfig" in msg
    assert "not enabled: FUSE_FS" in msg
    assert "fs/fuse/Kconfig" in msg


def test_misspelt_option_is_named(kernel, tmp_path):
    frag = tmp_path / "typo.config"
    frag.write_text("CONFIG_FUSE_IO_URNG=y\n")
    with pytest.raises(KconfigError, match="CONFIG_FUSE_IO_URNG=y .*no such option"):
        kconfig.configure(kernel.tree, tmp_path / "build", [frag], ["make", f"O={tmp_path / 'build'}"],
                          tmp_path / "kconfig.log")
