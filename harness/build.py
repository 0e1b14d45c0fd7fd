"""Build a kernel out of tree with ccache: one build directory per (source, series, config) key.

An unchanged key with a finished build is reused without running make (seconds); a mutable
source (a user's tree) always runs make, which is incremental. Tool output goes to build.log;
the terminal sees progress lines and, on failure, the failing file and the log's tail.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness import kconfig
from harness.cache import INTREE_PREFIX, cache_dir, cache_root, key_of, safe_name, write_json_atomic
from harness.errors import BuildError, MissingTool
from harness.log import fmt_duration

log = logging.getLogger(__name__)

STAMP = "fuse-harness-build.json"
#: Bumped when the way we configure or build changes, so old build dirs are not reused.
RECIPE = 2
IMAGE = Path("arch/x86/boot/bzImage")
#: In a build folder: what its .config was configured from (build.config_current).
CONFIG_RECORD = "fuse-harness-config.json"
#: In a build folder: `make headers` ran after the last build (ensure_headers).
HEADERS_STAMP = ".fuse-harness-headers"


@dataclass(frozen=True)
class Built:
    """A finished build."""

    key: str
    build_dir: Path
    image: Path
    config: Path
    log: Path
    reused: bool
    seconds: float
    kernel_release: str


@functools.cache
def compiler_version() -> str:
    """gcc's first --version line (asked once per process: build keys and config_inputs use it)."""
    out = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def build_key(source_identity: str, series_identity: str | None, fragments: list[Path]) -> str:
    """The cache key: source, series, what the fragments ask for, compiler, recipe."""
    frag_text = [(f.name, fragment_meaning(f)) for f in fragments]
    return key_of(RECIPE, source_identity, series_identity, frag_text, compiler_version())


def fragment_meaning(fragment: Path) -> str:
    """What a kconfig fragment asks for, one NAME=value line per option, sorted (the last
    value of an option its fragment sets twice; `# CONFIG_X is not set` is X=n: what
    kconfig.parse_config reads): an edit of a comment or a blank line, or a reordering,
    changes neither the build key nor the configure skip."""
    return "\n".join(f"{name}={value}" for name, value in sorted(kconfig.parse_config(fragment.read_text()).items()))


def make_env() -> dict[str, str]:
    """Environment for reproducible, cache-friendly kernel builds."""
    env = dict(os.environ)
    root = cache_root()
    env.update(
        CCACHE_DIR=str(cache_dir("ccache")),
        CCACHE_BASEDIR=str(root),
        CCACHE_NOHASHDIR="1",
        CCACHE_MAXSIZE=env.get("CCACHE_MAXSIZE", "8G"),
        KBUILD_BUILD_TIMESTAMP="0",
        KBUILD_BUILD_USER="fuse-harness",
        KBUILD_BUILD_HOST="fuse-harness",
        LC_ALL="C",
    )
    return env


def make_cmd(build_dir: Path, jobs: int | None = None) -> list[str]:
    cc = "ccache gcc" if shutil.which("ccache") else "gcc"
    return ["make", f"O={build_dir}", f"-j{jobs or os.cpu_count() or 2}", f"CC={cc}", "HOSTCC=gcc"]


def check_tools() -> None:
    # lz4: kconfigs/trim.config asks for an LZ4-compressed bzImage
    missing = [t for t in ("make", "gcc", "flex", "bison", "bc", "perl", "lz4") if not shutil.which(t)]
    if missing:
        raise MissingTool(
            f"missing build tools: {', '.join(missing)}",
            hint="run `make setup` (or: apt-get install -y build-essential flex bison bc lz4 libelf-dev libssl-dev)",
        )


_ERROR_RE = re.compile(r"^([^\s:]+\.(?:c|h|S|lds|rs)):(\d+)(?::\d+)?: (?:fatal )?error: (.*)$", re.M)


def summarize_failure(logfile: Path, tail_lines: int = 25) -> str:
    """The first compiler error (file:line: message) and the log's tail."""
    text = logfile.read_text(errors="replace")
    first = _ERROR_RE.search(text)
    tail = "\n".join(text.splitlines()[-tail_lines:])
    head = f"{first.group(1)}:{first.group(2)}: {first.group(3)}" if first else "no compiler error line found"
    return f"{head}\n--- last {tail_lines} lines of {logfile} ---\n{tail}"


class _Progress:
    """Counts Kbuild's `CC`/`LD`/... lines against the object count of the previous build."""

    def __init__(self, expected: int) -> None:
        self.expected = max(expected, 1)
        self.done = 0
        self.start = time.monotonic()
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def line(self, text: str) -> None:
        if re.match(r"\s+(CC|AS|LD|AR)\s", text):
            self.done += 1
        now = time.monotonic()
        if now - self.last >= (1 if self.tty else 30):
            self.last = now
            pct = min(99, 100 * self.done // self.expected)
            msg = f"build: {self.done} objects (~{pct}%), {fmt_duration(now - self.start)}"
            if self.tty:
                sys.stderr.write(f"\rI: {msg}   ")
                sys.stderr.flush()
            else:
                log.info(msg)

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def run_make(tree: Path, build_dir: Path, logfile: Path, targets: list[str], expected: int) -> int:
    """Run make, streaming output into logfile and progress to stderr; return objects built."""
    cmd = [*make_cmd(build_dir), *targets]
    progress = _Progress(expected)
    with logfile.open("a", buffering=1) as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(
            cmd, cwd=tree, env=make_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        for text in proc.stdout:
            out.write(text)
            progress.line(text)
        rc = proc.wait()
    progress.finish()
    if rc != 0:
        raise BuildError(f"kernel build failed: {summarize_failure(logfile)}", hint=f"full log: {logfile}")
    return progress.done


def _objects_of_previous_builds() -> int:
    """Object count of the largest finished build, to estimate progress."""
    best = 0
    for stamp in cache_dir("builds").glob(f"*/{STAMP}"):
        try:
            best = max(best, int(json.loads(stamp.read_text()).get("objects", 0)))
        except (ValueError, OSError):
            continue
    return best or 2900


#: The defconfig `make defconfig` starts from on x86_64 (arch/x86/Makefile's KBUILD_DEFCONFIG).
DEFCONFIG = Path("arch/x86/configs/x86_64_defconfig")


def _sha(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def config_inputs(tree: Path, fragments: list[Path]) -> str:
    """A digest of everything kconfig.configure() reads: the tree's defconfig and every Kconfig*
    file (a changed default changes the result), the fragments and the compiler (Kconfig asks
    it). Reading them takes well under a second on a kernel tree."""
    h = hashlib.sha256(f"{compiler_version()}\n{_sha(tree / DEFCONFIG)}\n".encode())
    for f in fragments:
        h.update(f"{f.name}:{hashlib.sha256(fragment_meaning(f).encode()).hexdigest()}\n".encode())
    for top, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, build folders
        for name in sorted(files):
            if name.startswith("Kconfig"):
                path = Path(top, name)
                h.update(f"{path.relative_to(tree)}:{_sha(path)}\n".encode())
    return h.hexdigest()


def config_current(dotconfig: Path, record: dict, inputs: str) -> bool:
    """Whether the .config configure() made in this folder is what it would make again: the
    same inputs (config_inputs) and .config untouched since (record: CONFIG_RECORD's content)."""
    return bool(record.get("config_sha")) and record.get("config_inputs") == inputs \
        and _sha(dotconfig) == record["config_sha"]


def kernel_release(tree: Path, build_dir: Path) -> str:
    """The built kernel's release (include/config/kernel.release, else `make kernelrelease`)."""
    with contextlib.suppress(OSError):
        release = (build_dir / "include" / "config" / "kernel.release").read_text().strip()
        if release:
            return release
    out = subprocess.run(
        ["make", "-s", f"O={build_dir}", "kernelrelease"], cwd=tree, capture_output=True, text=True
    ).stdout.strip()
    return out.splitlines()[-1] if out else "unknown"


def _stamp(path: Path) -> dict:
    """A build dir's stamp, {} when absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def place(tree: Path, name: str) -> Path:
    """builds/<name>; for a source tree the cache owns, a symlink to `<tree>/.fh-build-<name>`.

    Kbuild names the source `..` when the output folder is a direct subfolder of it, so every
    such build (plain sources, series scratch trees, bisect clones) compiles with the same
    command lines and ccache hits across them: a series build after the plain one is a warm
    build. A user's tree (path:) is never written to; its builds stay under builds/.
    """
    link = cache_dir("builds") / name
    if link.is_symlink() and not link.exists():  # its scratch tree was replaced
        link.unlink()
    if link.exists() or not tree.resolve().is_relative_to(cache_root().resolve()):
        return link
    real = tree / f"{INTREE_PREFIX}{name}"
    real.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real)
    return link


def build(
    tree: Path,
    label: str,
    key: str,
    fragments: list[Path],
    mutable: bool = False,
    metadata: dict | None = None,
    build_dir: Path | None = None,
    built_stamp: dict | None = None,
) -> Built:
    """Configure and build tree into the cache's build dir for key; reuse when possible.

    `build_dir` pins the build directory (bisect: every step builds incrementally in one
    folder); the stamp's key must then match for a reuse without make. A `mutable` tree (one
    whose key cannot see every change) runs make, unless `built_stamp` is the build dir's
    stamp as it is now: this run's own build of the same key moments ago (the controller of
    an `-n N` run hands its stamp to the workers, so each does not run make once more).
    """
    check_tools()
    build_dir = build_dir or place(tree, safe_name(f"{label}-{key}"))
    stamp = build_dir / STAMP
    logfile = build_dir / "build.log"
    start = time.monotonic()
    info = _stamp(stamp)
    if info.get("key") == key and (not mutable or info == built_stamp) and (build_dir / IMAGE).exists():
        log.info("build: reusing %s (key %s%s)", build_dir, key, ", built by this run" if mutable else "")
        return Built(key, build_dir, build_dir / IMAGE, build_dir / ".config", logfile, True,
                     time.monotonic() - start, info.get("kernel_release", "unknown"))
    stamp.unlink(missing_ok=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    logfile.write_text("")
    inputs = config_inputs(tree, fragments)
    record = build_dir / CONFIG_RECORD
    if config_current(build_dir / ".config", _stamp(record), inputs):
        log.info("build: .config as configured last time (same defconfig, Kconfig files, fragments and "
                 "compiler) in %s (log: %s)", build_dir, logfile)
    else:
        log.info("build: configuring in %s (log: %s)", build_dir, logfile)
        record.unlink(missing_ok=True)
        kconfig.configure(tree, build_dir, fragments, ["make", f"O={build_dir}"], logfile)
        # kept apart from the stamp, which goes while make runs: a compile error does not
        # cost the next run its configure skip
        write_json_atomic(record, {"config_inputs": inputs, "config_sha": _sha(build_dir / ".config")})
    expected = max(len(list(build_dir.rglob("*.o"))), _objects_of_previous_builds(), 100)
    log.info("build: make bzImage (cold ~15 min on 2 cores; with a warm ccache ~1 min)")
    (build_dir / HEADERS_STAMP).unlink(missing_ok=True)  # the uapi headers may change with the tree
    objects = run_make(tree, build_dir, logfile, ["bzImage"], expected)
    release = kernel_release(tree, build_dir)
    took = time.monotonic() - start
    write_json_atomic(stamp, {
        "key": key, "objects": len(list(build_dir.rglob("*.o"))),
        "seconds": round(took, 1), "finished": time.time(), "kernel_release": release, "tree": str(tree),
        "fragments": [str(f) for f in fragments], **(metadata or {}),
    })
    log.info("build: %s done in %s (%d objects compiled)", release, fmt_duration(took), objects)
    return Built(key, build_dir, build_dir / IMAGE, build_dir / ".config", logfile, False, took, release)


def ensure_headers(tree: Path, build_dir: Path) -> Path:
    """The kernel's exported uapi headers (`make headers`) in build_dir/usr/include."""
    include = build_dir / "usr" / "include"
    stamp = build_dir / HEADERS_STAMP
    if stamp.exists() and (include / "linux" / "fuse.h").exists():
        return include
    logfile = build_dir / "headers.log"
    with logfile.open("w") as out:
        result = subprocess.run(["make", f"O={build_dir}", "-s", "headers"], cwd=tree, env=make_env(),
                                stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0 or not (include / "linux" / "fuse.h").exists():
        raise BuildError("`make headers` failed", hint=f"see {logfile}")
    stamp.touch()
    return include
