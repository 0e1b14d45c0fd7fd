"""known-issues.yaml: kernel behaviour the tests assert is wrong, reported as expected failures.

Each entry names the test(s) it covers (an fnmatch pattern on the pytest node id, or a list of
them when one kernel defect shows in several tests), the
kernel versions it applies to (an fnmatch pattern on the target's kernel_version or the
built release), why the behaviour is wrong, and a reproducer. Matching tests are marked
`xfail(strict=True)`: a fix upstream turns them into an XPASS that fails the run, so
somebody notices and updates the file.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import ConfigError

PATH = Path(__file__).resolve().parent.parent / "known-issues.yaml"
_KEYS = {"id", "test", "kernel", "target", "reason", "reproducer", "reference", "dmesg", "cases",
         "intermittent"}


@dataclass(frozen=True)
class KnownIssue:
    id: str
    #: fnmatch patterns on the pytest node id: the tests the issue covers (one defect, one or
    #: more tests: a YAML string or list of strings).
    test: tuple[str, ...]
    kernel: str
    reason: str
    reproducer: str = ""
    reference: str = ""
    #: Regexes of the kernel log findings this issue produces. Any other finding in the
    #: test (a KASAN report, a new WARN) still fails it: an XFAIL never hides it.
    dmesg: tuple[str, ...] = ()
    #: fnmatch on the target name: a posted series' finding is scoped to its own target
    #: (e.g. kmbuf-v4), not to every kernel of the same base version.
    target: str = "*"
    #: fnmatch patterns of the guest KTAP cases (subtests) this issue makes fail; with them,
    #: any other failing case of the test still fails it (one finding never hides another).
    cases: tuple[str, ...] = ()
    #: The bug shows in some runs only (a randomised client such as fsx): a run where it did
    #: not show is a plain PASS, not an XPASS; one where it did is an XFAIL as usual.
    intermittent: bool = False

    def applies(self, nodeid: str, kernel_version: str | None, target: str | None = None) -> bool:
        if not any(fnmatch.fnmatchcase(nodeid, p) for p in self.test):
            return False
        if not fnmatch.fnmatchcase(target or "", self.target):
            return False
        return kernel_version is not None and fnmatch.fnmatchcase(kernel_version, self.kernel)


def load(path: Path = PATH) -> list[KnownIssue]:
    """All entries; unknown or missing keys are errors naming the file and the entry."""
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of issues")
    issues = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: entry {i} is not a mapping")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise ConfigError(f"{path}: entry {entry.get('id', i)}: unknown key {unknown[0]!r}",
                              hint=f"known keys: {', '.join(sorted(_KEYS))}")
        missing = [k for k in ("id", "test", "kernel", "reason") if k not in entry]
        if missing:
            raise ConfigError(f"{path}: entry {entry.get('id', i)}: missing key {missing[0]!r}")
        intermittent = entry.pop("intermittent", False)
        if not isinstance(intermittent, bool):
            raise ConfigError(f"{path}: entry {entry.get('id', i)}: 'intermittent' must be true or false")
        test = entry.pop("test")
        if isinstance(test, str):
            test = [test]
        if not isinstance(test, list) or not test or not all(isinstance(t, str) and t for t in test):
            raise ConfigError(f"{path}: entry {entry.get('id', i)}: 'test' must be a pattern or a "
                              "non-empty list of patterns")
        lists = {"test": tuple(test)}
        for key in ("dmesg", "cases"):
            value = entry.pop(key, None) or []
            lists[key] = tuple(map(str, value if isinstance(value, list) else [value]))
        issues.append(KnownIssue(**{k: str(v) for k, v in entry.items()}, **lists,
                                 intermittent=intermittent))
    return issues


def unexplained_cases(issue_cases: tuple[str, ...], subtests: list[dict[str, str]]) -> list[str]:
    """Failing subtests (name: verdict) that none of the issue's case patterns covers
    ([] when the issue names no cases: it covers the whole test)."""
    if not issue_cases:
        return []
    bad = [s for s in subtests if s.get("verdict") not in ("PASS", "SKIP", "XFAIL")]
    return [f"{s['name']}: {s['verdict']}" for s in bad
            if not any(fnmatch.fnmatchcase(s["name"], p) for p in issue_cases)]


def matching(issues: list[KnownIssue], nodeid: str, kernel_version: str | None,
             target: str | None = None) -> KnownIssue | None:
    """The first issue that covers this test on this kernel version and target."""
    return next((k for k in issues if k.applies(nodeid, kernel_version, target)), None)


def covering(issues: list[KnownIssue], nodeid: str, kernel_version: str | None,
             target: str | None = None) -> list[KnownIssue]:
    """The issues that together explain this test's expected failure: the first one that covers
    the whole test (no cases), else every case-scoped issue that applies (two findings of one
    scenario, such as two divergences the parity oracle reports, are two issues). [] for none."""
    found = [k for k in issues if k.applies(nodeid, kernel_version, target)]
    whole = [k for k in found if not k.cases]
    return whole[:1] or found
