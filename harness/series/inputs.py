"""Series inputs: parse `--series` strings, and turn a spec into one file per patch.

Grammar (`parse_series`):

    mbox:FILE               an mbox (or a single mail)
    dir:FOLDER              every FOLDER/*.patch, sorted by name
    git:[PATH#]A..B         `git format-patch A..B` in the git tree PATH (default .)
    msgid:ID | <ID>         a lore message-id, fetched with `b4 am`
    series:NAME/REV | NAME/REV | NAME    a manifest under patches/
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import MissingTool, SeriesError

from . import cover as mails
from .cover import Cover
from .spec import SeriesSpec, load_ref, normalize_msgid

log = logging.getLogger(__name__)

B4_TIMEOUT = 300
INPUT_KINDS = ("mbox", "dir", "git", "msgid", "series")
_PREFIX = re.compile(r"^\s*(\[[^\]]*\]\s*)+")


@dataclass(frozen=True)
class PatchFile:
    """One mail of a series after splitting: what `git am` gets, one at a time.

    `number` counts the patches of this input from 1; `tag` is the mail's own `MM/NN`
    (`01/25`, from its Subject), "" when the Subject is unnumbered.
    """

    number: int
    path: Path
    subject: str
    origin: str
    tag: str = ""


def parse_series(text: str, root: Path | None = None) -> SeriesSpec:
    """Map a user string (see the module docstring) to a `SeriesSpec`."""
    text = text.strip()
    kind, sep, rest = text.partition(":")
    if not sep or kind not in INPUT_KINDS:
        if "@" in text and (text.startswith("<") or "://" in text):
            return _msgid_spec(text)
        if re.fullmatch(r"[\w.+-]+(/[\w.+-]+)?", text):
            return load_ref(text, root)
        raise SeriesError(
            f"cannot read series {text!r}",
            "use mbox:FILE, dir:FOLDER, git:PATH#A..B, msgid:ID or series:NAME/REV",
        )
    if not rest:
        raise SeriesError(f"series {text!r}: nothing after {kind}:")
    if kind == "series":
        return load_ref(rest, root)
    if kind == "msgid":
        return _msgid_spec(rest)
    if kind == "mbox":
        f = _path(rest, text)
        if not f.is_file():
            raise SeriesError(f"series {text!r}: {f} is not a file",
                              "pass the path of an mbox; `b4 am -o DIR MESSAGE-ID` writes one")
        return SeriesSpec(name=f.stem, revision="local", patches=(f,), origin=text)
    if kind == "dir":
        d = _path(rest, text)
        files = tuple(sorted(d.glob("*.patch"))) if d.is_dir() else ()
        if not files:
            raise SeriesError(f"series {text!r}: no *.patch files in {d}",
                              "pass a folder of `git format-patch` output")
        return SeriesSpec(name=d.name, revision="local", patches=files, origin=text)
    repo_s, _, rng = rest.rpartition("#")
    repo = _path(repo_s or ".", text)
    if not re.fullmatch(r"[^\s.][^\s]*\.\.[^\s.][^\s]*", rng):
        raise SeriesError(f"series {text!r}: expected a range A..B after '#'", "e.g. git:~/linux#v7.3..fuse-wip")
    if not (repo / ".git").exists() and not (repo / "HEAD").is_file():
        raise SeriesError(f"series {text!r}: {repo} is not a git tree")
    base = rng.split("..", 1)[0]
    return SeriesSpec(name=repo.name, revision=rng, base=base, git_repo=repo, git_range=rng, origin=text)


def _msgid_spec(value: str) -> SeriesSpec:
    mid = normalize_msgid(value)
    if "@" not in mid:
        raise SeriesError(
            f"{value!r} is not a message-id", "a message-id looks like 20260402162840.2989717-1-user@example.com"
        )
    return SeriesSpec(name=mid.split("@")[0], revision="lore", cover=mid, msgid=mid, origin=f"msgid:{mid}")


def _path(value: str, text: str) -> Path:
    return Path(value).expanduser().resolve()


def collect(spec: SeriesSpec, dest: Path) -> list[PatchFile]:
    """Write one mail per patch of `spec` into `dest` (fetching if needed), in order."""
    return collect_mails(spec, dest)[0]


def collect_mails(spec: SeriesSpec, dest: Path) -> tuple[list[PatchFile], Cover | None]:
    """Split `spec`'s input into one file per patch under `dest`, and read its cover letter.

    Cover letters (numbered 0/NN, or mails without a diff) and replies (`Re:`) are skipped,
    never given to git am. The cover is the first one found; with none, a `base-commit:`
    line in the first patch still gives a base. Raises SeriesError when nothing is left.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if spec.msgid:
        sources = [fetch_b4(spec.msgid, dest / "b4")]
    elif spec.git_range:
        sources = [_format_patch(spec, dest)]
    else:
        sources = list(spec.patches)
    out: list[PatchFile] = []
    cover: Cover | None = None
    split = dest / "split"
    shutil.rmtree(split, ignore_errors=True)
    for k, src in enumerate(sources):
        tmp = split / f"{k:04d}"
        tmp.mkdir(parents=True)
        _run(["git", "mailsplit", "-b", "-d4", f"-o{tmp}", str(src)], f"cannot split {src} into mails")
        found = sorted(tmp.iterdir())
        for i, mail in enumerate(found, 1):
            raw = mail.read_bytes()
            subject = mail_subject(raw)
            label = src.name if len(found) == 1 else f"{src.name} #{i}"
            what = mails.kind(raw)
            num = mails.numbering(mails.header(raw, "Subject"))
            if what == "cover":
                why = "the cover letter" if num and num[0] == 0 else "no diff, a cover letter"
                log.info("skipping %s (%s): %s", label, subject or "no subject", why)
                if cover is None:
                    cover = mails.parse_cover(raw)
                    (dest / "cover.mail").write_bytes(raw)
                continue
            if what == "reply":
                log.info("skipping %s (%s): a reply, not a patch", label, subject or "no subject")
                continue
            n = len(out) + 1
            target = dest / f"{n:04d}.patch"
            target.write_bytes(raw)
            tag = f"{num[0]:0{len(str(num[1]))}d}/{num[1]}" if num else ""
            out.append(PatchFile(n, target, subject, label, tag))
    shutil.rmtree(split, ignore_errors=True)
    if not out and not spec.landed:
        raise SeriesError(f"series {spec.ref}: no patches found in {spec.origin}")
    if out and (cover is None or cover.base is None):
        first = mails.find_base(mails.body(out[0].path.read_bytes()), prose=False)
        if first:
            cover = Cover(cover.subject if cover else "", cover.msgid if cover else None, *first)
    return out, cover


def fetch_b4(msgid: str, dest: Path) -> Path:
    """`b4 am -o DEST MSGID`; return the mbox it wrote."""
    hint = (
        f"download the thread's mbox and pass it with --series mbox:FILE (https://lore.kernel.org/r/{msgid}/t.mbox.gz)"
    )
    if not shutil.which("b4"):
        raise MissingTool(
            f"b4 is needed to fetch {msgid}",
            "install it: apt-get install b4 (Debian trixie/sid) or pip install b4; or " + hint,
        )
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    log.info("fetching %s with b4", msgid)
    try:
        proc = subprocess.run(
            ["b4", "am", "-o", str(dest), msgid],
            capture_output=True,
            text=True,
            timeout=B4_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise SeriesError(f"b4 timed out fetching {msgid} (offline?)", hint) from None
    (dest / "b4.log").write_text(proc.stdout + proc.stderr)
    mboxes = sorted(dest.glob("*.mbx"))
    if proc.returncode != 0 or not mboxes:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise SeriesError(f"b4 could not fetch {msgid}: {last}", hint)
    return mboxes[0]


def _format_patch(spec: SeriesSpec, dest: Path) -> Path:
    assert spec.git_repo and spec.git_range
    out = dest / "range.mbox"
    proc = _run(
        ["git", "-C", str(spec.git_repo), "format-patch", "--stdout", "--no-signature", spec.git_range],
        f"git format-patch {spec.git_range} failed in {spec.git_repo}",
    )
    if not proc.stdout.strip():
        raise SeriesError(f"git range {spec.git_range} in {spec.git_repo} has no commits")
    out.write_text(proc.stdout)
    return out


def mail_subject(raw: bytes) -> str:
    """The Subject header of a mail, unfolded, decoded, `[PATCH ...]` prefixes removed."""
    return _PREFIX.sub("", mails.header(raw, "Subject")).strip()


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise SeriesError(what + (f": {detail[-1]}" if detail else ""))
    return proc
