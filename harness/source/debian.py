"""Debian's linux-source-X.Y packages, fetched with apt into a private lists directory.

The mirror URI is read from the machine's own apt sources at run time. The suites that
carry newer kernels than the host's release (backports, unstable) are added in a separate
sources file and lists directory under the cache, so the system's apt state is untouched
and nothing is installed: the .deb is unpacked with dpkg -x.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from harness.cache import cache_dir, lock_path, locked, safe_name
from harness.errors import DownloadError, MissingTool, SourceError
from harness.source.tarball import EXTRACTED, extract_tarball

log = logging.getLogger(__name__)

#: Suites searched for linux-source packages; apt picks the highest candidate.
EXTRA_SUITES = ("trixie-backports", "sid")
SYSTEM_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
LISTS_MAX_AGE = 24 * 3600
#: Beside EXTRACTED in a Debian tree: the package version it was extracted from.
VERSION_FILE = ".fuse-harness-version"


def mirror_uri(paths: tuple[Path, ...] = SYSTEM_SOURCES) -> str:
    """The machine's main Debian archive URI (not the security archive)."""
    texts: list[str] = []
    for path in paths:
        if path.is_dir():
            texts += [p.read_text() for p in sorted(path.glob("*.sources"))]
            texts += [p.read_text() for p in sorted(path.glob("*.list"))]
        elif path.is_file():
            texts.append(path.read_text())
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and "security" not in suites.group(1) and "debian" in uris.group(1):
                return uris.group(1)
        for line in text.splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and "security" not in m.group(2) and "debian" in m.group(1):
                return m.group(1)
    raise SourceError(
        "no Debian mirror found in the machine's apt sources",
        hint="debian:linux-source-X.Y needs a Debian apt source; use path: or tarball: instead",
    )


class Apt:
    """apt-get/apt-cache with a private sources file and lists directory."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir("apt")
        if not shutil.which("apt-get"):
            raise MissingTool("apt-get not found", hint="debian: sources need a Debian-based host")

    def _opts(self) -> list[str]:
        r = self.root
        return [
            "-o", "Dir::Etc::SourceList=/dev/null",
            "-o", f"Dir::Etc::SourceParts={r / 'sources.list.d'}",
            "-o", f"Dir::State::Lists={r / 'lists'}",
            "-o", f"Dir::Cache={r / 'cache'}",
            "-o", "Debug::NoLocking=1",
        ]

    def configure(self) -> None:
        parts = self.root / "sources.list.d"
        parts.mkdir(parents=True, exist_ok=True)
        (self.root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        text = (
            "Types: deb\n"
            f"URIs: {mirror_uri()}\n"
            f"Suites: {' '.join(EXTRA_SUITES)}\n"
            "Components: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        target = parts / "fuse-harness.sources"
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            stamp = self.root / "updated"
            stamp.unlink(missing_ok=True)

    def _locked(self):
        """The lock on this private apt state (sources file, lists, pkgcache): apt's own locking
        is off (Debug::NoLocking: it would want the system's lock), so two processes updating or
        reading the lists at once would tear them."""
        return locked(self.root / "apt.lock", "apt")

    def update(self, force: bool = False) -> None:
        """apt-get update, at most once a day unless forced."""
        with self._locked():
            self._update(force)

    def _update(self, force: bool) -> None:
        self.configure()
        stamp = self.root / "updated"
        if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE:
            return
        log.info("apt: updating package lists for %s", ", ".join(EXTRA_SUITES))
        result = subprocess.run(["apt-get", *self._opts(), "update"], capture_output=True, text=True)
        failed = result.returncode != 0 or re.search(r"^(E:|Err:)", result.stdout + result.stderr, re.M)
        if failed:
            raise DownloadError(
                "apt-get update for the kernel source suites failed",
                hint=(result.stderr or result.stdout).strip()[-500:],
            )
        stamp.touch()

    def candidate(self, package: str) -> str | None:
        """apt's candidate version of package in EXTRA_SUITES, None when it has none."""
        with self._locked():
            out = subprocess.run(
                ["apt-cache", *self._opts(), "policy", package], capture_output=True, text=True
            ).stdout
        m = re.search(r"Candidate:\s*(\S+)", out)
        return m.group(1) if m and m.group(1) != "(none)" else None

    def download(self, package: str, version: str, dest: Path) -> Path:
        """package=version's .deb in dest, downloaded into a folder of its own and moved into
        place when apt-get has verified it against the signed lists, so a .deb in dest is whole
        (a download cut short leaves only that folder, removed by the next attempt)."""
        partial = dest / f".partial-{safe_name(f'{package}_{version}')}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        log.info("apt: downloading %s=%s (~170 MB)", package, version)
        with self._locked():
            result = subprocess.run(
                ["apt-get", *self._opts(), "download", f"{package}={version}"],
                cwd=partial, capture_output=True, text=True,
            )
        debs = sorted(partial.glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            shutil.rmtree(partial, ignore_errors=True)
            raise DownloadError(f"cannot download {package}={version}", hint=result.stderr.strip()[-500:])
        final = dest / debs[-1].name
        os.replace(debs[-1], final)
        shutil.rmtree(partial, ignore_errors=True)
        return final


class DebianSource:
    """`debian:linux-source-7.3` (optionally `debian:linux-source-7.3=VERSION`)."""

    mutable = False

    def __init__(self, value: str) -> None:
        self.spec = f"debian:{value}"
        self.package, _, self.version = value.partition("=")
        if not re.fullmatch(r"linux-source-\d+\.\d+", self.package):
            raise SourceError(
                f"bad Debian kernel source package {self.package!r}",
                hint="use debian:linux-source-X.Y, e.g. debian:linux-source-7.3",
            )
        self._apt: Apt | None = None

    def check(self) -> None:
        """The package name was checked on construction; the version needs apt (later)."""

    @property
    def apt(self) -> Apt:
        if self._apt is None:
            self._apt = Apt()
        return self._apt

    def _local_versions(self) -> list[Path]:
        base = cache_dir("sources")
        return sorted(p for p in base.glob(f"debian-{self.package}-*") if (p / EXTRACTED).exists())

    def resolve_version(self) -> str:
        """The version to use: pinned, else apt's candidate, else the newest one cached (offline)."""
        if self.version:
            return self.version
        try:
            self.apt.update()
            version = self.apt.candidate(self.package)
        except (DownloadError, MissingTool) as exc:
            local = self._local_versions()
            if not local:
                raise
            log.warning("apt unavailable (%s); using the cached %s", exc.message, local[-1].name)
            return (local[-1] / VERSION_FILE).read_text().strip()
        if version is None:
            raise SourceError(
                f"no Debian package {self.package} in {', '.join(EXTRA_SUITES)}",
                hint="known: linux-source-7.3 (trixie-backports), linux-source-7.2 (sid)",
            )
        self.version = version
        return version

    def tree_dir(self) -> Path:
        return cache_dir("sources") / safe_name(f"debian-{self.package}-{self.resolve_version()}")

    def identity(self) -> str:
        return f"debian:{self.package}={self.resolve_version()}"

    def prepare(self) -> Path:
        """The extracted tree of this package version in the cache, downloaded and extracted
        when missing. One process at a time per version (a lock per tree): a second caller, an
        xdist worker or another fuse-harness process, waits and then finds the tree ready.
        Raises DownloadError (apt), MissingTool (dpkg) or SourceError (a bad package)."""
        dest = self.tree_dir()
        if (dest / EXTRACTED).exists():
            return dest
        with locked(lock_path("source", dest.name), f"source {self.spec}"):
            if not (dest / EXTRACTED).exists():  # else made by the process this one waited for
                self._extract(self.resolve_version(), dest)
        return dest

    def _extract(self, version: str, dest: Path) -> None:
        if not shutil.which("dpkg"):
            raise MissingTool("dpkg not found", hint="apt-get install dpkg")
        downloads = cache_dir("downloads")
        debs = sorted(downloads.glob(f"{self.package}_{version.replace(':', '%3a')}_*.deb"))
        deb = debs[-1] if debs else self.apt.download(self.package, version, downloads)
        unpack = dest.with_name(dest.name + ".deb")  # a fixed name: a killed run's is removed here
        shutil.rmtree(unpack, ignore_errors=True)
        try:
            result = subprocess.run(["dpkg", "-x", str(deb), str(unpack)], capture_output=True, text=True)
            if result.returncode != 0:
                deb.unlink(missing_ok=True)
                raise SourceError(f"cannot unpack {deb.name}: {result.stderr.strip()[-300:]}",
                                  hint="the damaged package was removed: run again to download it anew")
            tarballs = sorted(unpack.glob("usr/src/linux-source-*.tar.*"))
            if not tarballs:
                raise SourceError(f"{deb.name} holds no usr/src/linux-source-*.tar.*")
            extract_tarball(tarballs[0], dest, extra={VERSION_FILE: version + "\n"})
        finally:
            shutil.rmtree(unpack, ignore_errors=True)
