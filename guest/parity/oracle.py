"""The parity oracle's judgement (pure): normalized results, the first divergence, shrinking.

A client result (guest.parity.client) is {"ok": value} | {"err": "ENOENT"} | {"hung": s} |
{"died": why}; value holds only what must agree (bytes and their digest, sizes, modes,
nlink, names; never inode numbers or times). `normalize()` folds in the call's fault
record from the server:
  * an injected errno: the client's result, as for any call;
  * an out_header corruption (error out of range, wrong unique): the kernel's verdict,
    `refused` or `accepted`. /dev/fuse refuses such a reply by failing the server's write()
    (the request stays pending and the server answers it correctly), io-uring by ending
    the request with the refusal's errno (fuse_uring_commit() is void: the COMMIT_AND_FETCH
    CQE is the next fetch and says nothing about it), so there the client's call ending with
    that errno is the refusal: what the client sees afterwards follows from that difference
    in design, so only the verdict is compared;
  * a length that lies (reply_long/short): both transports end the request when they refuse
    it, so the verdict *and* the client's result are compared.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from guest.parity.gen import HEADER_KINDS, PAYLOAD_KINDS, call_class, describe

#: The errno the kernel refuses an out_header corruption with, on both transports alike
#: (7.3 fs/fuse/dev.c fuse_dev_do_write(), dev_uring.c fuse_uring_out_header_has_err()):
#: error <= -ERESTARTSYS or > 0 -> EINVAL, unique of no pending request -> ENOENT.
REFUSAL = {"error_positive": "EINVAL", "error_erestartsys": "EINVAL", "error_int_min": "EINVAL",
           "unique_wrong": "ENOENT"}


def verdict(client: dict, rec: dict, legacy: bool) -> str:
    """What the kernel did with a corrupted reply: refused / accepted / hung / died, or
    `write <ERRNO>` / `ended <ERRNO>` for a refusal with another errno than REFUSAL's.
    Over /dev/fuse from the server's write() (rec["refused"] names its errno); over io-uring
    from the client's result: the kernel ends a refused request with the refusal's errno,
    an accepted reply reaches the client (the faults fire on success replies only, so an
    accepted header lie with the right payload is a success). A length lie is refused with
    any error (the client's errno is compared on its own)."""
    if "hung" in client or "died" in client:
        return "hung" if "hung" in client else "died"
    want = REFUSAL.get(rec["kind"])
    got = rec.get("refused") if legacy else client.get("err")
    if got is None:
        return "accepted"
    if want is None or got == want:
        return "refused"
    return f"{'write' if legacy else 'ended'} {got}"


def normalize(client: dict, fired: list[dict], legacy: bool) -> dict:
    """What is compared for one call: the client's result and its fault's outcome."""
    rec = fired[0] if fired else None
    if rec is None:
        return {"result": client}
    if "skipped" in rec:
        return {"result": client, "fault": "skipped"}
    kind = rec["kind"]
    if kind in HEADER_KINDS:
        return {"corrupt": kind, "verdict": verdict(client, rec, legacy)}
    if kind in PAYLOAD_KINDS:
        return {"corrupt": kind, "verdict": verdict(client, rec, legacy), "result": client}
    return {"result": client, "fault": kind}


def first_divergence(ref: list[dict], got: list[dict]) -> int | None:
    """Index of the first call whose normalized result differs (a sequence that stopped
    early, e.g. after a hung call, differs at its first missing call); None when equal."""
    for k in range(max(len(ref), len(got))):
        if k >= len(ref) or k >= len(got) or ref[k] != got[k]:
            return k
    return None


def divergence_class(call: dict, a: dict | None, b: dict | None) -> str:
    """The case (gen.CLASSES) call counts against, from its normalized results a and b
    (None: not run): its fault's group when the fault fired (was not skipped) on either
    side. A call compared equal counts with b None."""
    fired = any(x is not None and x.get("fault") != "skipped" and ("corrupt" in x or "fault" in x)
                for x in (a, b))
    return call_class(call, fired)


def explain(seed: int, calls: list[dict], k: int, ref: list[dict], got: list[dict],
            transport: str) -> str:
    """The divergence at call k in words."""
    def at(lst: list[dict]) -> str:
        return str(lst[k]) if k < len(lst) else "(not run: the sequence stopped before)"

    return (f"seed {seed}: call {describe(calls[k])}: legacy {at(ref)}, {transport} {at(got)}")


def shrink(calls: list[dict], first: int, diverges: Callable[[list[dict]], bool],
           max_tests: int = 40, deadline: float | None = None) -> tuple[list[dict], int, bool]:
    """The fewest calls of calls[:first + 1] that still diverge (the diverging call is kept
    last): the call alone first, then delta debugging (ddmin, complements) on the calls
    before it. diverges(candidate) runs a candidate. Returns (calls, tests run, complete);
    complete is False when max_tests or the deadline (time.monotonic()) cut it short."""
    last, rest = calls[first], list(calls[:first])
    tests = 0

    def out_of_budget() -> bool:
        return tests >= max_tests or (deadline is not None and time.monotonic() >= deadline)

    def test(cand: list[dict]) -> bool:
        nonlocal tests
        tests += 1
        return diverges([*cand, last])

    if not rest:
        return [last], tests, True
    if out_of_budget():
        return [*rest, last], tests, False
    if test([]):
        return [last], tests, True
    n = 2
    while len(rest) >= 2:
        chunk = -(-len(rest) // n)
        parts = [rest[j:j + chunk] for j in range(0, len(rest), chunk)]
        for j in range(len(parts)):
            if out_of_budget():
                return [*rest, last], tests, False
            cand = [c for p in parts[:j] + parts[j + 1:] for c in p]
            if test(cand):
                rest, n = cand, max(n - 1, 2)
                break
        else:
            if n >= len(rest):
                break
            n = min(len(rest), 2 * n)
    return [*rest, last], tests, True
