"""Two processes preparing one thing in the cache at the same moment (issue: two xdist workers
extracted linux-source-7.2 into one `.partial` folder on a fresh machine, and both failed).

Real processes, real tar, dpkg and git, on small inputs made here: a `tar` on PATH that waits
before it runs makes the two preparations overlap for certain, so without the source's lock the
second one removes the first one's `.partial` and one of them fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from harness.errors import SourceError

ROOT = Path(__file__).resolve().parents[2]
SERIES = Path(__file__).resolve().parent.parent / "data" / "series"
FILES = {"Makefile": "# toy kernel\n", "Kconfig": "", "fs/fuse/dev_uring.c": "int fuse_uring;\n" * 2000}


def _kernel_tarball(path: Path, top: str = "linux-toy") -> Path:
    src = path.parent / f"{path.name}.src" / top
    for rel, text in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    with tarfile.open(path, "w:xz") as tar:
        tar.add(src, arcname=top)
    return path


def _slow_tools(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `tar` waits 1 s and logs each call's arguments (extractions: _extractions)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "tar-calls"
    bin_dir.mkdir()
    real = shutil.which("tar")
    (bin_dir / "tar").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nsleep 1\nexec {real} "$@"\n')
    (bin_dir / "tar").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FUSE_HARNESS_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    return env, calls


def _extractions(calls: Path) -> int:
    """How many kernel tarballs were extracted (dpkg -x runs a tar of its own: not counted)."""
    return sum(".partial" in line for line in calls.read_text().splitlines())


def _prepare_twice(spec: str, env: dict[str, str], tmp_path: Path) -> list[dict]:
    """Start two processes that prepare spec at the same moment (both wait on one start file)."""
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import json, os, time
        from pathlib import Path
        from harness import source
        from harness.errors import HarnessError
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        try:
            tree = source.parse({spec!r}).prepare()
            print(json.dumps({{"tree": str(tree)}}))
        except HarnessError as exc:
            print(json.dumps({{"error": str(exc)}}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT) for _ in range(2)]
    go.touch()
    return _outputs(procs)


def _outputs(procs: list[subprocess.Popen]) -> list:
    """Each process's last stdout line as JSON, once all have exited (a failure shows its stderr)."""
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _intact(tree: Path) -> None:
    for rel, text in FILES.items():
        assert (tree / rel).read_text() == text, rel
    assert (tree / ".fuse-harness-extracted").is_file()


def test_two_processes_prepare_one_tarball_source_once(tmp_path):
    tarball = _kernel_tarball(tmp_path / "linux-toy.tar.xz")
    env, calls = _slow_tools(tmp_path)
    results = _prepare_twice(f"tarball:{tarball}", env, tmp_path)
    assert "error" not in results[0] and results[0] == results[1]
    _intact(Path(results[0]["tree"]))
    assert _extractions(calls) == 1  # the second process found the tree ready
    sources = tmp_path / "cache" / "sources"
    assert [p.name for p in sources.iterdir()] == [Path(results[0]["tree"]).name]  # no .partial left


def test_a_stale_partial_folder_is_removed_never_trusted(tmp_path, monkeypatch):
    from harness import source

    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))
    tarball = _kernel_tarball(tmp_path / "linux-toy.tar.xz")
    src = source.parse(f"tarball:{tarball}")
    dest = tmp_path / "cache" / "sources" / f"tarball-{src.identity().split(':')[1][:16]}"
    # what a killed extraction leaves: a half-filled .partial and .root, and a tree with no marker
    for left in (dest.with_name(dest.name + ".partial"), dest.with_name(dest.name + ".root"), dest):
        (left / "fs").mkdir(parents=True)
        (left / "fs" / "half-written.c").write_text("int x")
    tree = src.prepare()
    assert tree == dest
    _intact(tree)
    assert not (tree / "fs" / "half-written.c").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def _fake_linux_source_deb(tmp_path: Path, downloads: Path, version: str) -> Path:
    """A linux-source-7.2 .deb of version in downloads, holding usr/src/linux-source-7.2.tar.xz."""
    root = tmp_path / "deb"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: linux-source-7.2\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    )
    (root / "usr" / "src").mkdir(parents=True)
    _kernel_tarball(root / "usr" / "src" / "linux-source-7.2.tar.xz", top="linux-source-7.2")
    downloads.mkdir(parents=True, exist_ok=True)
    deb = downloads / f"linux-source-7.2_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--build", "-Zxz", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian's dpkg)")
def test_two_processes_prepare_one_debian_source_once(tmp_path):
    """The debian: path (dpkg -x, then the tarball inside), version pinned so no apt is asked;
    a stale unpack folder of a killed run is there too."""
    env, calls = _slow_tools(tmp_path)
    cache = tmp_path / "cache"
    _fake_linux_source_deb(tmp_path, cache / "downloads", "7.2.13-1")
    stale = cache / "sources" / "debian-linux-source-7.2-7.2.13-1.deb"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("left by a killed run")
    results = _prepare_twice("debian:linux-source-7.2=7.2.13-1", env, tmp_path)
    assert "error" not in results[0] and results[0] == results[1]
    tree = Path(results[0]["tree"])
    _intact(tree)
    assert (tree / ".fuse-harness-version").read_text() == "7.2.13-1\n"
    assert _extractions(calls) == 1
    assert sorted(p.name for p in (cache / "sources").iterdir()) == [tree.name]


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian's dpkg)")
def test_a_damaged_package_is_named_and_removed(tmp_path, monkeypatch):
    from harness import source

    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))
    deb = _fake_linux_source_deb(tmp_path, tmp_path / "cache" / "downloads", "7.2.13-1")
    deb.write_bytes(deb.read_bytes()[: deb.stat().st_size // 2])  # cut short
    with pytest.raises(SourceError) as err:
        source.parse("debian:linux-source-7.2=7.2.13-1").prepare()
    assert err.value.message.startswith(f"cannot unpack {deb.name}: ")
    assert "run again to download it anew" in err.value.hint and not deb.exists()
    assert not list((tmp_path / "cache" / "sources").iterdir())


def test_two_processes_apply_series_onto_one_plain_tree(tmp_path):
    """Two series (and the same one twice) applied at once onto one plain tree: one private base
    repository, indexed once, and each series' scratch tree made once."""
    src = tmp_path / "src"
    shutil.copytree(SERIES / "toy", src)
    env = {**os.environ, "FUSE_HARNESS_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import json, os, sys, time
        from harness.series import apply_for_target
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        tree, ident = apply_for_target(__import__("pathlib").Path({str(src)!r}), "tree:toy", sys.argv[1])
        print(json.dumps([str(tree), ident]))
    """)
    specs = [f"dir:{SERIES / 'good'}", f"dir:{SERIES / 'good'}", f"mbox:{SERIES / 'good.mbox'}"]
    procs = [subprocess.Popen([sys.executable, "-c", code, spec], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) for spec in specs]
    go.touch()
    results = _outputs(procs)
    assert results[0] == results[1] and results[2][0] != results[0][0]
    for tree, _ in results:
        status = subprocess.run(["git", "-C", tree, "status", "--porcelain"], capture_output=True, text=True)
        assert status.stdout == "" and (Path(tree) / "src" / "pool.h").is_file()
    assert len(list((tmp_path / "cache" / "series" / "repos").glob("*.git"))) == 1
