"""Series manifests: `patches/<name>/<revision>/manifest.yaml` -> frozen `SeriesSpec`."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError, SeriesError

#: Transport names a manifest may promise; the same strings are used by the guest.
TRANSPORTS = (
    "legacy",
    "iovec",
    "bufpool",
    "bufpool-registered",
    "zero-copy",
    "bufring",
    "pinned-headers",
    "pinned-buffers",
    "kmbuf",
    "kmbuf-zero-copy",
)

MANIFEST = "manifest.yaml"
_KEYS = {
    "name",
    "revision",
    "subject",
    "cover",
    "base",
    "prerequisites",
    "promises",
    "applies_to",
    "patches",
    "mbox",
    "notes",
}
_REQUIRED = ("name", "revision")


@dataclass(frozen=True)
class SeriesSpec:
    """One patch series: where its patches come from and what it promises.

    Exactly one way of getting patches is set: `patches` (files, applied in
    order; each may be one mail or an mbox), `msgid` (fetched with b4), or
    `git_repo` + `git_range` (format-patch). None of them: a landed series.
    """

    name: str
    revision: str
    subject: str = ""
    cover: str | None = None
    base: str | None = None
    prerequisites: tuple[str, ...] = ()
    promises: tuple[str, ...] = ()
    applies_to: str = ""
    patches: tuple[Path, ...] = ()
    msgid: str | None = None
    git_repo: Path | None = None
    git_range: str | None = None
    origin: str = ""
    notes: str = field(default="", compare=False)

    @property
    def ref(self) -> str:
        """`name/revision`, the form `series:` accepts."""
        return f"{self.name}/{self.revision}"

    @property
    def landed(self) -> bool:
        """True when there is nothing to apply (the series is in the base)."""
        return not (self.patches or self.msgid or self.git_range)

    def content_hash(self) -> str:
        """Hash of everything that changes the applied result (patch bytes included)."""
        h = hashlib.sha256()
        meta = {
            "base": self.base,
            "msgid": self.msgid,
            "git_range": self.git_range,
            "git_repo": str(self.git_repo) if self.git_repo else None,
            "prerequisites": list(self.prerequisites),
        }
        h.update(json.dumps(meta, sort_keys=True).encode())
        for p in self.patches:
            h.update(b"\0" + p.name.encode() + b"\0")
            h.update(p.read_bytes())
        return h.hexdigest()


def patches_root() -> Path:
    """The catalog folder: $FUSE_HARNESS_PATCHES or the repo's patches/."""
    env = os.environ.get("FUSE_HARNESS_PATCHES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "patches"


def supported(root: Path | None = None) -> list[str]:
    """All `name/revision` refs that have a manifest, sorted."""
    root = root or patches_root()
    return sorted(f"{m.parent.parent.name}/{m.parent.name}" for m in root.glob(f"*/*/{MANIFEST}"))


def load_manifest(path: Path) -> SeriesSpec:
    """Parse and validate one manifest; every problem names the file and the key."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SeriesError(f"no manifest at {path}", "list known series with `fuse-harness series --list`") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - _KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}", f"known keys: {', '.join(sorted(_KEYS))}")
    for key in _REQUIRED:
        if not data.get(key):
            raise ConfigError(f"{path}: missing key {key!r}")
    folder = path.parent
    name, rev = _str(path, data, "name"), _str(path, data, "revision")
    if (folder.parent.name, folder.name) != (name, rev):
        raise ConfigError(
            f"{path}: name/revision {name}/{rev} does not match its folder {folder.parent.name}/{folder.name}"
        )
    promises = _strlist(path, data, "promises")
    bad = [p for p in promises if p not in TRANSPORTS]
    if bad:
        raise ConfigError(
            f"{path}: key 'promises': unknown transport {bad[0]!r}", f"choose from: {', '.join(TRANSPORTS)}"
        )
    cover = normalize_msgid(_str(path, data, "cover")) or None
    patches, msgid = _patch_source(path, data, cover)
    base = _str(path, data, "base")
    return SeriesSpec(
        name=name,
        revision=rev,
        subject=_str(path, data, "subject"),
        cover=cover,
        base=None if base.lower() in ("", "none") else base,
        prerequisites=tuple(_strlist(path, data, "prerequisites")),
        promises=tuple(promises),
        applies_to=_str(path, data, "applies_to"),
        patches=patches,
        msgid=msgid,
        origin=str(path),
        notes=_str(path, data, "notes"),
    )


def load_ref(ref: str, root: Path | None = None) -> SeriesSpec:
    """Load `name/revision` (or a bare `name` with a single revision) from the catalog."""
    root = root or patches_root()
    name, _, rev = ref.strip("/").partition("/")
    if not rev:
        revs = sorted(p.parent.name for p in root.glob(f"{name}/*/{MANIFEST}"))
        if len(revs) != 1:
            known = ", ".join(revs) or "none"
            raise SeriesError(f"series {name!r}: give a revision (known: {known})", f"e.g. --series {name}/REV")
        rev = revs[0]
    path = root / name / rev / MANIFEST
    if not path.is_file():
        raise SeriesError(f"unknown series {name}/{rev}", f"known: {', '.join(supported(root)) or 'none'}")
    return load_manifest(path)


def normalize_msgid(value: str) -> str:
    """Strip `<>`, `id:` and lore URL wrapping from a message-id."""
    v = value.strip()
    for prefix in ("msgid:", "id:", "mid:"):
        if v.startswith(prefix):
            v = v[len(prefix) :]
    if v.startswith(("http://", "https://")):
        parts = [p for p in v.split("/") if "@" in p]
        v = parts[-1] if parts else v
    return v.strip().strip("<>")


def _patch_source(path: Path, data: dict[str, Any], cover: str | None) -> tuple[tuple[Path, ...], str | None]:
    patches, mbox = data.get("patches"), data.get("mbox")
    if patches is not None and mbox is not None:
        raise ConfigError(f"{path}: keys 'patches' and 'mbox' exclude each other")
    if mbox is not None:
        return (_existing(path, str(mbox), "mbox"),), None
    if patches in (None, [], ""):
        return (), None
    if patches == "b4":
        if not cover:
            raise ConfigError(f"{path}: key 'patches' is 'b4' but there is no 'cover' message-id")
        return (), cover
    if not isinstance(patches, list) or not all(isinstance(p, str) for p in patches):
        raise ConfigError(f"{path}: key 'patches' must be a list of file names, 'b4', or absent")
    return tuple(_existing(path, p, "patches") for p in patches), None


def _existing(path: Path, name: str, key: str) -> Path:
    f = path.parent / name
    if "/" in name or not f.is_file():
        raise ConfigError(f"{path}: key {key!r}: no file {name!r} in {path.parent}")
    return f


def _str(path: Path, data: dict[str, Any], key: str) -> str:
    v = data.get(key)
    if v is None:
        return ""
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return str(v).strip()
    raise ConfigError(f"{path}: key {key!r} must be a string")


def _strlist(path: Path, data: dict[str, Any], key: str) -> list[str]:
    v = data.get(key)
    if v is None:
        return []
    if isinstance(v, str):
        v = v.split()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{path}: key {key!r} must be a list of strings")
    return [x.strip() for x in v]
