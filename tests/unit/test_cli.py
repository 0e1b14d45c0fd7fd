"""The CLI turns bad input into one clear line and an exit code, never a traceback."""

import subprocess
import sys

from harness.cli import main


def test_unknown_target(capsys):
    assert main(["build", "--target", "v9.9"]) == 4
    err = capsys.readouterr().err
    assert "E: unknown target 'v9.9'" in err and "v7.3" in err and "Traceback" not in err


def test_missing_tree(capsys, tmp_path):
    assert main(["build", "--source", f"path:{tmp_path / 'nope'}"]) == 4
    assert "does not exist" in capsys.readouterr().err


def test_tree_that_is_not_a_kernel(capsys, tmp_path):
    assert main(["build", "--source", f"path:{tmp_path}"]) == 4
    assert "does not look like a kernel source tree" in capsys.readouterr().err


def test_in_tree_build_refused_and_tree_untouched(capsys, tmp_path):
    (tmp_path / "Makefile").write_text("")
    (tmp_path / "Kconfig").write_text("")
    (tmp_path / ".config").write_text("CONFIG_X=y\n")
    assert main(["build", "--source", f"path:{tmp_path}"]) == 4
    assert "make mrproper" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".config", "Kconfig", "Makefile"]


def test_missing_tarball(capsys, tmp_path):
    assert main(["build", "--source", f"tarball:{tmp_path / 'linux.tar.xz'}"]) == 4
    assert "does not exist" in capsys.readouterr().err


def test_bad_source_spec(capsys):
    assert main(["build", "--source", "ftp:somewhere"]) == 4
    assert "bad kernel source" in capsys.readouterr().err


def test_bad_debian_package(capsys):
    assert main(["build", "--source", "debian:linux-image-amd64"]) == 4
    assert "linux-source-X.Y" in capsys.readouterr().err


def test_targets_lists_shipped():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "targets"], capture_output=True, text=True)
    assert out.returncode == 0 and "v7.3" in out.stdout and "v7.2" in out.stdout


def test_bad_input_is_named_while_another_build_holds_the_lock(capsys, tmp_path, monkeypatch):
    """`build` checks its input before it waits for another fuse-harness process's build."""
    import threading

    from harness.cache import lock_file

    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))
    held = lock_file(tmp_path / "cache" / "obtain.lock", wait=False)  # "another build"
    built = tmp_path / "built"
    for name in ("Makefile", "Kconfig", ".config"):
        (built / name).parent.mkdir(exist_ok=True)
        (built / name).write_text("")
    rcs = []
    try:
        for spec in (f"path:{tmp_path / 'nope'}", f"path:{built}"):
            worker = threading.Thread(target=lambda s=spec: rcs.append(main(["build", "--source", s])),
                                      daemon=True)
            worker.start()
            worker.join(20)
            assert not worker.is_alive(), f"{spec} waited for the lock"
    finally:
        import os

        os.close(held)
    assert rcs == [4, 4]
    assert "make mrproper" in capsys.readouterr().err
