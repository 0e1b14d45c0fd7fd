"""One verdict vocabulary for every writer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Verdict(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"
    XFAIL = "XFAIL"
    XPASS = "XPASS"
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"


@dataclass
class CaseResult:
    """One pytest test as the harness reports it."""

    nodeid: str
    verdict: Verdict
    seconds: float = 0.0
    reason: str = ""
    findings: list[dict[str, str]] = field(default_factory=list)
    dmesg_file: str | None = None
    vm_outcome: str | None = None
    subtests: list[dict[str, str]] = field(default_factory=list)
    #: seconds of `seconds` the harness spent in the guest around the test (markers, kernel log)
    harness_seconds: float = 0.0
    #: the guest edge scenario the test runs (guest/edge SCENARIOS), None for other tests
    scenario: str | None = None
    #: the transport the test is marked with (its parameter's, for a parametrized one), or None
    transport: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data

    @classmethod
    def from_json(cls, data: dict) -> CaseResult:
        """The inverse of to_json (summary.json, an xdist worker's report)."""
        return cls(**{**data, "verdict": Verdict(data["verdict"])})


def verdict_of(outcome: str, when: str, wasxfail: bool, timed_out: bool = False) -> Verdict:
    """Map a pytest report outcome to a Verdict."""
    if timed_out:
        return Verdict.TIMEOUT
    if outcome == "skipped":
        return Verdict.XFAIL if wasxfail else Verdict.SKIP
    if outcome == "passed":
        return Verdict.XPASS if wasxfail else Verdict.PASS
    return Verdict.FAIL if when == "call" else Verdict.ERROR
