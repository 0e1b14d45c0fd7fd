"""Incremental builds: which build folder a tree gets, and when configure can be skipped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness import build, config, kernel


def _tree(path: Path) -> Path:
    (path / "include" / "uapi" / "linux").mkdir(parents=True)
    (path / "include" / "uapi" / "linux" / "fuse.h").write_text("#define FUSE_KERNEL_MINOR_VERSION 45\n")
    (path / build.DEFCONFIG).parent.mkdir(parents=True)
    (path / build.DEFCONFIG).write_text("CONFIG_64BIT=y\n")
    for name in ("Makefile", "Kconfig"):
        (path / name).write_text("# not a real kernel\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)
    return path


def test_a_user_tree_keeps_one_build_folder_across_edits_and_commits(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(kernel.BUILD_DIR_ENV, raising=False)
    tree = _tree(tmp_path / "linux")
    seen = []

    def fake_build(tree, label, key, fragments, mutable=False, metadata=None, build_dir=None, built_stamp=None):
        seen.append((key, build_dir, mutable))
        return build.Built(key, build_dir, build_dir / build.IMAGE, build_dir / ".config", build_dir / "log",
                           False, 1.0, "7.3.4")

    monkeypatch.setattr(build, "build", fake_build)
    target = config.load_target("v7.3")
    spec = f"path:{tree}"
    kernel.obtain(target, source_override=spec)                     # clean
    (tree / "Makefile").write_text("# edited\n")
    kernel.obtain(target, source_override=spec)                     # edited
    subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "e"],
                   check=True)
    kernel.obtain(target, source_override=spec)                     # a new HEAD, clean
    keys, folders, mutable = zip(*seen, strict=True)
    assert len(set(keys)) == 3 and len(set(folders)) == 1          # one folder, three source states
    assert mutable == (False, True, False)                          # clean: reuse on an equal key, else make
    assert folders[0].parent == tmp_path / "cache" / "builds"       # never inside the user's tree


def test_configure_is_skipped_only_while_its_inputs_and_config_are_unchanged(tmp_path):
    tree = _tree(tmp_path / "linux")
    frag = tmp_path / "base.config"
    frag.write_text("CONFIG_FUSE_FS=y\n")
    dotconfig = tmp_path / "build" / ".config"
    dotconfig.parent.mkdir()
    dotconfig.write_text("CONFIG_FUSE_FS=y\n")
    inputs = build.config_inputs(tree, [frag])
    stamp = {"config_inputs": inputs, "config_sha": build._sha(dotconfig)}
    assert build.config_current(dotconfig, stamp, inputs)
    assert not build.config_current(dotconfig, {}, inputs)                         # no previous build
    frag.write_text("CONFIG_FUSE_FS=y\nCONFIG_KASAN=y\n")
    assert build.config_inputs(tree, [frag]) != inputs                             # a fragment changed
    frag.write_text("CONFIG_FUSE_FS=y\n# CONFIG_KASAN is not set\n")
    assert build.config_inputs(tree, [frag]) != inputs                             # one more option, off
    frag.write_text("# FUSE, as a module would not do\n\n  CONFIG_FUSE_FS=y\n# the end\n")
    assert build.config_inputs(tree, [frag]) == inputs                             # comments, blank lines
    (tree / build.DEFCONFIG).write_text("CONFIG_64BIT=y\nCONFIG_SMP=y\n")
    assert build.config_inputs(tree, [frag]) != inputs                             # the defconfig changed
    (tree / build.DEFCONFIG).write_text("CONFIG_64BIT=y\n")
    (tree / "fs" / "fuse").mkdir(parents=True)
    (tree / "fs" / "fuse" / "Kconfig").write_text("config FUSE_IO_URING\n\tdefault y\n")
    assert build.config_inputs(tree, [frag]) != inputs                             # a Kconfig file changed
    (tree / "fs" / "fuse" / "Kconfig").unlink()
    (tree / ".fh-build-x").mkdir()
    (tree / ".fh-build-x" / "Kconfig").write_text("ignored\n")
    assert build.config_inputs(tree, [frag]) == inputs                             # build folders are not read
    dotconfig.write_text("CONFIG_FUSE_FS=m\n")
    assert not build.config_current(dotconfig, stamp, inputs)                      # .config edited since


@pytest.mark.parametrize("written", ["7.3.4-g1234\n", ""])
def test_kernel_release_from_kbuild_file(tmp_path, monkeypatch, written):
    (tmp_path / "include" / "config").mkdir(parents=True)
    (tmp_path / "include" / "config" / "kernel.release").write_text(written)
    monkeypatch.setattr(build.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "7.3.4-make\n"))
    assert build.kernel_release(tmp_path, tmp_path) == ("7.3.4-g1234" if written else "7.3.4-make")


def test_a_failed_make_keeps_the_configure_skip_and_a_build_drops_the_headers(tmp_path, monkeypatch):
    from harness import kconfig
    from harness.errors import BuildError

    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))
    tree, out = _tree(tmp_path / "linux"), tmp_path / "out"
    configured, fail = [], [True]

    def configure(tree, build_dir, fragments, make, logfile):
        configured.append(1)
        (build_dir / ".config").write_text("CONFIG_FUSE_FS=y\n")

    def run_make(tree, build_dir, logfile, targets, expected):
        if fail[0]:
            raise BuildError("kernel build failed: fs/fuse/dev_uring.c:9: error: expected expression")
        (build_dir / build.IMAGE).parent.mkdir(parents=True, exist_ok=True)
        (build_dir / build.IMAGE).write_bytes(b"bzImage")
        return 3

    monkeypatch.setattr(build, "check_tools", lambda: None)
    monkeypatch.setattr(kconfig, "configure", configure)
    monkeypatch.setattr(kconfig, "verify", lambda *a: None)
    monkeypatch.setattr(build, "run_make", run_make)
    monkeypatch.setattr(build, "kernel_release", lambda *a: "7.3.4")
    with pytest.raises(BuildError):
        build.build(tree, "v7.3-default", "k1", [], mutable=True, build_dir=out)
    fail[0] = False
    (out / build.HEADERS_STAMP).touch()
    built = build.build(tree, "v7.3-default", "k2", [], mutable=True, build_dir=out)
    assert configured == [1] and built.image.exists()        # configured once, across the failure
    assert not (out / build.HEADERS_STAMP).exists()           # `make headers` again for the new tree


def test_a_user_tree_built_by_this_run_is_reused_by_its_workers_without_make(tmp_path, monkeypatch):
    """A mutable tree runs make every time, except in an `-n N` worker handed the stamp of
    the controller's build of the same key, while the build dir's stamp is still that one."""
    import json

    from harness import kconfig

    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))
    tree, out = _tree(tmp_path / "linux"), tmp_path / "out"
    makes = []

    def run_make(tree, build_dir, logfile, targets, expected):
        makes.append(1)
        (build_dir / build.IMAGE).parent.mkdir(parents=True, exist_ok=True)
        (build_dir / build.IMAGE).write_bytes(b"bzImage")
        return 1

    monkeypatch.setattr(build, "check_tools", lambda: None)
    monkeypatch.setattr(kconfig, "configure", lambda tree, build_dir, *a: (build_dir / ".config").write_text(""))
    monkeypatch.setattr(kconfig, "verify", lambda *a: None)
    monkeypatch.setattr(build, "run_make", run_make)
    monkeypatch.setattr(build, "kernel_release", lambda *a: "7.3.4")
    build.build(tree, "v7.3-default", "k1", [], mutable=True, build_dir=out)        # the controller
    stamp = json.loads((out / build.STAMP).read_text())
    again = build.build(tree, "v7.3-default", "k1", [], mutable=True, build_dir=out, built_stamp=stamp)
    assert makes == [1] and again.reused                                          # a worker: no make
    build.build(tree, "v7.3-default", "k1", [], mutable=True, build_dir=out)        # no stamp: make
    assert len(makes) == 2
    build.build(tree, "v7.3-default", "k1", [], mutable=True, build_dir=out, built_stamp=stamp)
    assert len(makes) == 3                                  # the dir was rebuilt since: make again
    stamp = json.loads((out / build.STAMP).read_text())
    build.build(tree, "v7.3-default", "k2", [], mutable=True, build_dir=out, built_stamp=stamp)
    assert len(makes) == 4                                  # an edit since (another key): make


def test_a_dirty_tree_is_named_by_the_content_of_its_changes(tmp_path):
    from harness.source.tree import TreeSource

    tree = _tree(tmp_path / "linux")
    src = TreeSource(str(tree))
    clean = src.identity()
    assert clean.endswith("+clean")
    (tree / "Makefile").write_text("# edit one\n")
    one = src.identity()
    (tree / "Makefile").write_text("# edit two\n")
    two = src.identity()
    assert len({clean, one, two}) == 3  # same file changed twice: two identities
    (tree / "Makefile").write_text("# edit one\n")
    assert src.identity() == one
    (tree / "Kconfig").write_bytes(b"# latin-1: \xe9\n")  # not UTF-8: still a name, no traceback
    assert src.identity() not in (clean, one, two)


def test_the_build_key_follows_what_the_fragments_ask_for_not_their_comments(tmp_path):
    frag = tmp_path / "base.config"
    frag.write_text("CONFIG_FUSE_FS=y\nCONFIG_FUSE_IO_URING=y\n")
    key = build.build_key("debian:linux-source-7.3=7.3.4", None, [frag])
    frag.write_text("# what FUSE over io-uring needs\nCONFIG_FUSE_IO_URING=y\n\nCONFIG_FUSE_FS=y  \n")
    assert build.build_key("debian:linux-source-7.3=7.3.4", None, [frag]) == key   # comment, blank, order
    for text in ("CONFIG_FUSE_FS=m\nCONFIG_FUSE_IO_URING=y\n", "CONFIG_FUSE_FS=y\n# CONFIG_FUSE_IO_URING is not set\n",
                 "CONFIG_FUSE_FS=y\nCONFIG_FUSE_IO_URING=y\nCONFIG_KASAN=y\n"):
        frag.write_text(text)
        assert build.build_key("debian:linux-source-7.3=7.3.4", None, [frag]) != key, text
    renamed = tmp_path / "debug.config"
    renamed.write_text("CONFIG_FUSE_FS=y\nCONFIG_FUSE_IO_URING=y\n")
    assert build.build_key("debian:linux-source-7.3=7.3.4", None, [renamed]) != key    # another fragment
