"""Read what a series says about itself: the `[PATCH vN MM/NN]` numbers, the cover letter, its base.

Pure text functions over the raw bytes of one mail (as `git mailsplit` writes them), so
every form can be pinned with a sample. Where the facts come from:

- numbering: the bracketed prefix of the Subject (`[PATCH v4 01/25]`, `[RFC PATCH 3/7]`);
- cover letter: a mail numbered `0/NN`, or one with no diff in it (git am would say
  "Patch is empty" for it);
- reply: a Subject starting with `Re:` (a lore thread mbox carries the review mails too);
- base: a `base-commit: <sha>` line (`git format-patch --base`), else the first sentence
  of the cover letter that says the series is on top of / based on / applies to a commit id
  or a release tag (`This series is on top of commit b71e635feefc in the io-uring tree.`).
"""

from __future__ import annotations

import contextlib
import email
import email.header
import email.policy
import re
from dataclasses import dataclass

_NUMBER = re.compile(r"\[[^\]]*?\b(\d+)\s*/\s*(\d+)\s*\]")
_REPLY = re.compile(r"^\s*(?:re|aw|sv|fwd?)\s*:", re.I)
_BASE_COMMIT = re.compile(r"^base-commit:\s*([0-9a-f]{7,40})\b", re.M)
_REF = r"(?<![\w/.-])(?:commit\s+)?([0-9a-f]{7,40}|v\d+\.\d+(?:\.\d+)?(?:-rc\d+)?)(?![\w/])"
_BASE_PROSE = re.compile(
    r"\b(?:on\s+top\s+of|based\s+(?:on|upon|against)|rebased\s+(?:on|onto)|applies\s+(?:cleanly\s+)?(?:on|to)"
    r"|made\s+against)\b[^.;]{0,80}?" + _REF,
    re.I,
)
_URL = re.compile(r"\S+://\S+")
_SAID_MAX = 200


@dataclass(frozen=True)
class Cover:
    """A series' cover letter: its subject (prefix removed), message-id and named base.

    `base` is a commit id or release tag as written (None: the cover names none); `said`
    is the line or sentence it was read from, for quoting back to the user.
    """

    subject: str
    msgid: str | None = None
    base: str | None = None
    said: str | None = None


def header(raw: bytes, name: str) -> str:
    """One header of a mail, unfolded and decoded (RFC 2047); "" when absent."""
    head = raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    m = re.search(rf"^{re.escape(name)}:(.*(?:\n[ \t].*)*)", head, re.M | re.I)
    if not m:
        return ""
    value = " ".join(m.group(1).split())
    with contextlib.suppress(ValueError, LookupError):
        value = str(email.header.make_header(email.header.decode_header(value)))
    return value


def numbering(subject: str) -> tuple[int, int] | None:
    """(number, total) from a Subject's bracketed prefix, `[PATCH v4 01/25]` -> (1, 25); None if unnumbered."""
    m = _NUMBER.search(subject)
    return (int(m.group(1)), int(m.group(2))) if m else None


def has_diff(raw: bytes) -> bool:
    """True when the mail carries a diff git am can apply (git-style or a plain unified diff)."""
    return b"\ndiff --git " in raw or (b"\n--- " in raw and b"\n+++ " in raw and b"\n@@ " in raw)


def kind(raw: bytes) -> str:
    """`patch`, `cover` (numbered 0/NN, or no diff at all) or `reply` (Subject `Re: ...`)."""
    subject = header(raw, "Subject")
    if _REPLY.match(subject):
        return "reply"
    num = numbering(subject)
    if (num and num[0] == 0) or not has_diff(raw):
        return "cover"
    return "patch"


def body(raw: bytes) -> str:
    """The plain-text body of a mail, transfer encoding (quoted-printable, base64) undone."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain",))
        if part is not None:
            return str(part.get_content())
    except (ValueError, LookupError, TypeError, AttributeError):
        pass
    return raw.split(b"\n\n", 1)[-1].decode("utf-8", "replace")


def find_base(text: str, prose: bool = True) -> tuple[str, str] | None:
    """(base, the line or sentence saying so) from a mail body, or None.

    A `base-commit:` line wins; with `prose`, else the first sentence that says the series is
    on top of / based on / applies to a commit id or a `vX.Y[-rcN]` tag (URLs are ignored).
    """
    m = _BASE_COMMIT.search(text)
    if m:
        return m.group(1), m.group(0).strip()
    if not prose:
        return None
    text = text.split("\n-- \n", 1)[0]
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(_URL.sub(" ", para).split())
        for sentence in re.split(r"(?<=[.!?])\s+", flat):
            pm = _BASE_PROSE.search(sentence)
            if pm and _looks_like_ref(pm.group(1)):
                said = sentence if len(sentence) <= _SAID_MAX else sentence[: _SAID_MAX - 3] + "..."
                return pm.group(1), said
    return None


def parse_cover(raw: bytes) -> Cover:
    """The `Cover` of a cover-letter mail: Subject without `[PATCH ...]`, Message-ID, base."""
    subject = re.sub(r"^\s*(\[[^\]]*\]\s*)+", "", header(raw, "Subject")).strip()
    msgid = header(raw, "Message-ID").strip().strip("<>") or None
    found = find_base(body(raw))
    return Cover(subject, msgid, *(found or (None, None)))


def _looks_like_ref(ref: str) -> bool:
    if ref.startswith("v"):
        return True
    # a commit id has letters and digits; a plain number ("1000000") or word ("deadbeef" aside) is not one
    return bool(re.search(r"[0-9]", ref) and re.search(r"[a-f]", ref))
