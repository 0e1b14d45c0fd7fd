"""Apply a series (after its prerequisites) into a private scratch worktree, with a report.

Layout under `workdir`:
    repos/<git|tree>-<id>.git      private bare repo per source (shared objects or one base commit)
    series/<name>-<rev>-<key>/     tree/ (the worktree), patches/, am.log, result.json
`result.json` is written atomically; a later call with the same key reuses the tree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import locked, write_json_atomic
from harness.errors import SeriesError

from . import gitops
from .amlog import ApplyFailure, merge_failures, name_hunk, parse_am_output
from .cover import Cover
from .inputs import INPUT_KINDS, PatchFile, collect_mails, parse_series
from .spec import SeriesSpec

log = logging.getLogger(__name__)

APPLIED, FAILED, NOT_APPLIED, ALREADY = "applied", "failed", "not-applied", "already-applied"


@dataclass(frozen=True)
class PatchResult:
    """One patch's outcome. `status` is applied, already-applied, failed or not-applied."""

    number: int
    subject: str
    file: str
    status: str
    commit: str | None = None
    series: str = ""


@dataclass(frozen=True)
class AppliedSeries:
    """A scratch tree with the series applied: where it is and what happened per patch."""

    spec: SeriesSpec
    tree: Path
    base_commit: str
    head: str
    patches: tuple[PatchResult, ...]
    log: Path
    key: str
    source_id: str
    reused: bool = False
    seconds: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for metadata.json."""
        return {
            "series": self.spec.ref,
            "origin": self.spec.origin,
            "cover": self.spec.cover,
            "tree": str(self.tree),
            "base_commit": self.base_commit,
            "head": self.head,
            "key": self.key,
            "source_id": self.source_id,
            "reused": self.reused,
            "log": str(self.log),
            "seconds": self.seconds,
            "patches": [asdict(p) for p in self.patches],
        }


class SeriesApplyError(SeriesError):
    """A patch did not apply; carries the failure, per-patch results, the log path and the base
    the series names (`base`, from its cover letter or manifest; None when it names none)."""

    def __init__(
        self,
        message: str,
        hint: str,
        failure: ApplyFailure,
        results: tuple[PatchResult, ...],
        log_path: Path,
        base: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.failure = failure
        self.results = results
        self.log_path = log_path
        self.base = base


def apply(
    source: Path, spec: SeriesSpec, workdir: Path, *, base: str | None = None, source_id: str | None = None
) -> AppliedSeries:
    """Apply `spec` (prerequisites first) onto `source` in a scratch worktree under `workdir`.

    `source` is only read. A git source is checked out at `base`, else the spec's base
    commit, else HEAD; a plain tree is taken as it is. Reuses an earlier successful
    result with the same source id and series content. Cover letters and replies in the
    input are skipped. A patch that does not apply raises `SeriesApplyError`: the patch
    (its own `MM/NN`), file and hunk, git's reason, the base the series names (cover
    letter, else manifest) against this tree's identity, and what to do instead.
    """
    src = gitops.check_source(source)
    workdir = workdir.expanduser().resolve()
    chain = [*_prerequisites(spec), spec]
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    repo, commit, sid = _base(src, spec, workdir / "repos", base, source_id)
    timings["base"] = round(time.monotonic() - t0, 2)
    h = hashlib.sha256(f"{sid}\0{commit}".encode())
    for s in chain:
        h.update(s.content_hash().encode())
    key = h.hexdigest()[:16]
    run = workdir / "series" / f"{_safe(spec.ref)}-{key}"
    # and one per scratch tree: a second process applying the same series waits, then reuses it
    with locked(run.with_name(run.name + ".lock"), f"series {spec.ref}"):
        cached = _reuse(spec, run, key, sid)
        if cached:
            log.info("series %s: reusing %s (head %s)", spec.ref, cached.tree, cached.head[:12])
            return cached
        t0 = time.monotonic()
        with locked(gitops.repo_lock(repo), f"series base {src.name}"):  # one worktree add at a time
            if gitops.is_git_tree(src):
                gitops.add_worktree(repo, run / "tree", commit)
            else:
                gitops.copy_worktree(repo, src, run / "tree", commit)
        timings["worktree"] = round(time.monotonic() - t0, 2)
        return _apply_in(run, chain, spec, _Onto(sid, repo, commit, {}), key, timings)


def _apply_in(run: Path, chain: list[SeriesSpec], spec: SeriesSpec, onto: _Onto, key: str,
              timings: dict[str, float]) -> AppliedSeries:
    """Collect the mails of chain and `git am` them in run/tree (a fresh worktree at onto.commit)."""
    tree, am_log, result = run / "tree", run / "am.log", run / "result.json"
    t0 = time.monotonic()
    files: list[tuple[SeriesSpec, PatchFile]] = []
    for i, s in enumerate(chain):
        mails, onto.covers[s.ref] = collect_mails(s, run / "patches" / f"{i}-{_safe(s.ref)}")
        files += [(s, pf) for pf in mails]
    timings["collect"] = round(time.monotonic() - t0, 2)
    am_log.write_text("")
    t0 = time.monotonic()
    results = _am_all(tree, files, am_log, spec, run, onto)
    timings["am"] = round(time.monotonic() - t0, 2)
    head = gitops.git("-C", str(tree), "rev-parse", "HEAD").stdout.strip()
    done = AppliedSeries(spec, tree, onto.commit, head, tuple(results), am_log, key, onto.source_id, False, timings)
    write_json_atomic(result, {"ok": True, **done.to_dict()})
    n_ok = sum(r.status == APPLIED for r in results)
    log.info("series %s: %d/%d patches applied, head %s (%s)", spec.ref, n_ok, len(results), head[:12], tree)
    return done


def apply_for_target(tree: Path, identity: str, series: str) -> tuple[Path, str]:
    """Adapter for harness.kernel: apply the `--series` string onto a prepared source tree.

    Returns the scratch tree and a series identity for build cache keys.
    """
    from harness.cache import cache_dir  # lazy: keeps this module free of cache-root side effects

    spec = parse_series(series)
    done = apply(tree, spec, cache_dir("series"), source_id=identity)
    return done.tree, f"series:{spec.ref}:{done.key}:{done.head}"


def _base(src: Path, spec: SeriesSpec, repos: Path, base: str | None, source_id: str | None) -> tuple[Path, str, str]:
    if gitops.is_git_tree(src):
        rev = base or base_commit_of(spec.base) or "HEAD"
        repo, commit, sid = gitops.base_repo_for_git(src, rev, repos)
        return repo, commit, source_id or sid
    if base or base_commit_of(spec.base):
        log.info("plain tree %s: using it as the base (requested base %s is not checked)", src, base or spec.base)
    sid = source_id or gitops.plain_source_id(src)
    repo, commit = gitops.base_repo_for_tree(src, repos, sid)
    return repo, commit, sid


def base_commit_of(base: str | None) -> str | None:
    """A git rev from a manifest `base`: the value itself if it has no spaces, else its last hex id."""
    if not base:
        return None
    if " " not in base.strip():
        return base.strip()
    ids = re.findall(r"\b[0-9a-f]{7,40}\b", base)
    return ids[-1] if ids else None


def _prerequisites(spec: SeriesSpec) -> list[SeriesSpec]:
    out: list[SeriesSpec] = []
    for ref in spec.prerequisites:
        kind = ref.split(":", 1)[0] if ":" in ref else ""
        text = f"msgid:{ref}" if "@" in ref and kind not in INPUT_KINDS else ref
        pre = parse_series(text)
        out += [*_prerequisites(pre), pre]
    return [s for s in out if not s.landed]


@dataclass(frozen=True)
class _Onto:
    """What a failure message says about the tree and the series' own base."""

    source_id: str
    repo: Path
    commit: str
    covers: dict[str, Cover | None]


def _am_all(
    tree: Path, files: list[tuple[SeriesSpec, PatchFile]], am_log: Path, spec: SeriesSpec, run: Path, onto: _Onto
) -> list[PatchResult]:
    results: list[PatchResult] = []
    for n, (s, pf) in enumerate(files, 1):
        before = gitops.git("-C", str(tree), "rev-parse", "HEAD").stdout.strip()
        proc = gitops.git("-C", str(tree), "am", "-3", "--no-gpg-sign", str(pf.path), check=False)
        with am_log.open("a") as f:
            f.write(f"### {n} {pf.origin}: {pf.subject}\n{proc.stdout}{proc.stderr}\n")
        if proc.returncode == 0:
            head = gitops.git("-C", str(tree), "rev-parse", "HEAD").stdout.strip()
            status = APPLIED if head != before else ALREADY
            results.append(PatchResult(n, pf.subject, pf.origin, status, head if status == APPLIED else None, s.ref))
            continue
        failure = _diagnose(tree, pf, proc.stdout + proc.stderr)
        gitops.git("-C", str(tree), "am", "--abort", check=False)
        results.append(PatchResult(n, pf.subject, pf.origin, FAILED, None, s.ref))
        results += [
            PatchResult(m, p.subject, p.origin, NOT_APPLIED, None, ss.ref) for m, (ss, p) in enumerate(files[n:], n + 1)
        ]
        write_json_atomic(
            run / "result.json",
            {
                "ok": False,
                "series": spec.ref,
                "failure": asdict(failure),
                "patches": [asdict(r) for r in results],
                "log": str(am_log),
            },
        )
        mine = [p for ss, p in files if ss is s]
        raise _apply_error(s, spec, pf, f"{mine.index(pf) + 1}/{len(mine)}", failure, onto, tuple(results), am_log)
    return results


def _apply_error(
    s: SeriesSpec,
    top: SeriesSpec,
    pf: PatchFile,
    position: str,
    failure: ApplyFailure,
    onto: _Onto,
    results: tuple[PatchResult, ...],
    am_log: Path,
) -> SeriesApplyError:
    """One message: which patch (the mail's own MM/NN), file and hunk, why, the base the series
    names and what this tree is; the hint says what to do and where the log is."""
    who = f"series {s.ref}" + (f" (a prerequisite of {top.ref})" if s is not top else "")
    origin = f" ({pf.origin})" if "#" not in pf.origin else ""  # a file of its own: name it
    msg = f'{who}: patch {pf.tag or position} "{pf.subject}"{origin} does not apply: {failure.where()}'
    if failure.reason != "does not apply":
        msg += f": {failure.reason}"
    base, said = named_base(s, onto.covers.get(s.ref))
    files = f"git am log: {am_log}; the patch: {pf.path}"
    if not base or gitops.resolve_commit(onto.repo, base) == onto.commit:
        hint = "check that this tree is the base the series was made for; " + files
        return SeriesApplyError(msg, hint, failure, results, am_log, base)
    msg += f". Its base is {base} ({said}); this tree is {onto.source_id}."
    hint = (
        f"use a tree at {base} (--source path:TREE, a kernel tree with {base} checked out), "
        "or a version of the series forward-ported to this source (--series mbox:FILE"
    )
    ported = _targets_mentioning(onto.covers.get(s.ref), base)
    hint += f", or a target that names this series: {', '.join(f'--target {t}' for t in ported)}" if ported else ""
    return SeriesApplyError(msg, f"{hint}); {files}", failure, results, am_log, base)


def named_base(spec: SeriesSpec, cover: Cover | None) -> tuple[str | None, str]:
    """(base, where it was read, quoted) for a series: its cover letter's base, else its manifest's."""
    if cover and cover.base:
        return cover.base, f'cover letter: "{cover.said}"'
    manifest = base_commit_of(spec.base)
    if manifest:
        return manifest, f'manifest: "base: {spec.base}"'
    return None, ""


def _targets_mentioning(cover: Cover | None, base: str) -> list[str]:
    """Shipped targets whose YAML names the series' cover message-id or base commit (a port of it)."""
    from harness.config import TARGETS_DIR

    needles = [n for n in (cover.msgid if cover else None, base) if n and len(n) >= 12]
    return sorted(
        p.stem
        for p in TARGETS_DIR.glob("*.yaml")
        if needles and any(n in p.read_text(errors="replace") for n in needles)
    )


def _diagnose(tree: Path, pf: PatchFile, am_output: str) -> ApplyFailure:
    """Combine git am's message with `git apply --check -v` (which names the failing line)."""
    am = parse_am_output(am_output)
    check = gitops.git("-C", str(tree), "apply", "--check", "-v", str(pf.path), check=False)
    chk = parse_am_output(check.stdout + check.stderr) if check.returncode else ApplyFailure(am.reason)
    text = pf.path.read_text(errors="replace")
    return name_hunk(text, merge_failures(am, chk))


def _reuse(spec: SeriesSpec, run: Path, key: str, sid: str) -> AppliedSeries | None:
    try:
        data = json.loads((run / "result.json").read_text())
    except (OSError, ValueError):
        return None
    tree = run / "tree"
    if not data.get("ok") or data.get("key") != key or not (tree / ".git").exists():
        return None
    head = gitops.git("-C", str(tree), "rev-parse", "HEAD", check=False).stdout.strip()
    if head != data.get("head"):
        return None
    patches = tuple(PatchResult(**p) for p in data["patches"])
    return AppliedSeries(
        spec, tree, data["base_commit"], head, patches, run / "am.log", key, sid, True, data.get("seconds", {})
    )


def _safe(ref: str) -> str:
    # kernel Makefiles dislike ~, +, : and spaces in the source path
    return re.sub(r"[^A-Za-z0-9._-]+", "-", ref).strip("-")[:60] or "series"
