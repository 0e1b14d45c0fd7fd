"""Bad input stops before anything starts: one `E:` line with a hint, exit 4, no run folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import cli
from harness.config import REPO, load_target
from harness.errors import ConfigError, SeriesError, SourceError
from harness.kernel import preflight


@pytest.mark.parametrize(("argv", "words"), [
    (["--series", "mbox:/nonexistent.mbx"], "/nonexistent.mbx is not a file"),
    (["--series", "dir:/nonexistent-dir"], "no *.patch files"),
    (["--series", "bogus series"], "cannot read series"),
    (["--source", "path:/nonexistent-tree"], "kernel tree /nonexistent-tree does not exist"),
    (["--source", "path:/etc/hostname"], "kernel tree /etc/hostname is not a folder"),
    (["--source", "path:/usr"], "/usr does not look like a kernel source tree"),
    (["--source", "tarball:/nonexistent.tar.xz"], "tarball /nonexistent.tar.xz does not exist"),
    (["--source", "debian:linux-7.3"], "bad Debian kernel source package"),
    (["--target", "no-such-target"], "unknown target"),
])
def test_run_rejects_bad_input_up_front(tmp_path, capsys, argv, words):
    rc = cli.main(["run", "--results-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert rc == 4
    assert err.startswith("E: ") and words in err
    assert "hint:" in err
    assert list(tmp_path.iterdir()) == []  # no run folder


def test_preflight_names_the_missing_fragment_profile():
    with pytest.raises(ConfigError, match="unknown profile"):
        preflight(load_target("v7.3"), "nosuch")


def test_preflight_passes_good_input_without_network():
    preflight(load_target("v7.3"), "debug")  # a Debian source is resolved later, by apt


def test_preflight_series_errors_are_series_errors():
    with pytest.raises(SeriesError):
        preflight(load_target("v7.3"), series_override="mbox:/nonexistent.mbx")
    with pytest.raises(SourceError):
        preflight(load_target("v7.3"), source_override="path:/nonexistent-tree")


def test_pytest_rejects_bad_series_before_a_run_folder(tmp_path):
    """`make test`'s path: pytest itself stops at collection with the message, exit 4."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/vm", "-q", "-p", "no:cacheprovider",
                           "--results-dir", str(tmp_path), "--series", "mbox:/nonexistent.mbx"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "/nonexistent.mbx is not a file" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []
