"""Seeded generator of client calls for the transport-parity oracle (pure: no I/O).

`generate(seed, n)` gives the same list of calls for the same (seed, n) on every machine
(random.Random only). A call is a JSON-able dict: {"i": index, "op": name, ...arguments,
"fault": None | {"req": FUSE opcode name, "kind": ..., "errno": n}}. Sizes and offsets sit
at and around the connection's limits (`Config`): max_write, max_pages * page, the pool
buffer (max_payload_sz) and the kmbuf buffer (max_payload_sz rounded up to a page), and an
xattr value fills the payload buffer to the byte (name + NUL + value = max_payload_sz) or
misses it by one.

A fault is what the server does to the first reply of opcode `req` during that call:
`errno` replaces the reply by -errno (any reply); the corruptions apply to a success reply
only (an error reply is sent as it is, on every transport alike): `error_positive`
(out_header.error = 1), `error_erestartsys` (-512), `error_int_min` (-2**31),
`unique_wrong` (unique + 2**48, never a live request's), `reply_long` (8 bytes more than
the op's reply) and `reply_short` (8 bytes fewer). Payload corruptions never target READ,
WRITE or READDIRPLUS: on the zero-copy transports their data does not travel in the reply.
"""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass

from guest.fuse.proto import max_payload_size

PAGE = 4096
HEADER_KINDS = ("error_positive", "error_erestartsys", "error_int_min", "unique_wrong")
PAYLOAD_KINDS = ("reply_long", "reply_short")
#: Errnos the server injects; 511 is the largest the kernel accepts (-512 is refused).
ERRNOS = (errno.EIO, errno.EACCES, errno.ENOSPC, errno.EPERM, errno.EOVERFLOW, 511)
PAD = b"\xa5" * 8


@dataclass(frozen=True)
class Config:
    """What the server negotiates in INIT for one sequence."""

    name: str
    max_write: int
    max_pages: int

    @property
    def payload(self) -> int:
        """max_payload_sz: the ring's payload buffer, the pool buffer size."""
        return max_payload_size(self.max_write, self.max_pages, PAGE)

    @property
    def kmbuf_buf(self) -> int:
        """The kmbuf transport's buffer size (its default: payload rounded up to a page)."""
        return -(-self.payload // PAGE) * PAGE

    def boundaries(self) -> tuple[int, ...]:
        """The byte counts a transport splits or limits at."""
        return tuple(sorted({self.max_write, self.max_pages * PAGE, self.payload, self.kmbuf_buf}))

    def devfuse_bufsize(self) -> int:
        """The /dev/fuse server's read buffer: a request fits iff it fits the ring's payload
        buffer (in_header 40 + setxattr_in 8 + name + value <= 48 + max_payload_sz), never
        below the kernel's minimum (8192, and in_header + write_in + max_write)."""
        return max(48 + self.payload, 80 + self.max_write, 8192)

    def sizes(self) -> tuple[int, ...]:
        """Data sizes: small ones and each boundary -1, 0, +1, and past two payloads."""
        out = {0, 1, 511, PAGE - 1, PAGE, PAGE + 1, 2 * self.payload + 1}
        for b in self.boundaries():
            out.update((b - 1, b, b + 1))
        return tuple(sorted(out))

    def offsets(self) -> tuple[int, ...]:
        out = {0, 1, PAGE - 1, PAGE}
        for b in self.boundaries():
            out.update((b - 1, b))
        return tuple(sorted(out))

    def xattr_sizes(self, name: str) -> tuple[int, ...]:
        """Value sizes around the payload buffer for an xattr called name, and the VFS
        maximum (64 KiB)."""
        fit = self.payload - len(name) - 1
        return tuple(sorted(s for s in {0, 1, 100, fit - 1, fit, fit + 1, 65536} if 0 <= s <= 65536))


CONFIGS = (Config("small", 4096, 1), Config("mid", 16384, 8), Config("large", 131072, 32))


def config_of(seed: int) -> Config:
    """The connection limits a seed runs with (seeds cycle through CONFIGS)."""
    return CONFIGS[seed % len(CONFIGS)]


#: The file system every run starts from: path -> file size (None: a directory); f0 carries
#: xattr user.a.
INITIAL = {"f0": 5000, "f1": 0, "f2": 40000, "d0": None, "d0/f3": 100}
INITIAL_XATTRS = {"f0": {"user.a": b"alpha"}}
FILES = ("f0", "f1", "f2", "f4", "d0/f3", "d0/f5")
DIRS = ("d0", "d1", "d1/d2")
XNAMES = ("user.a", "user.b", "user.big")
#: op -> the FUSE opcode its faults target: sent once per call, synchronously, whatever the
#: caches hold (never LOOKUP or GETATTR: d_revalidate and attribute expiry depend on jiffies).
TARGET = {"create": "CREATE", "write": "WRITE", "read": "READ", "truncate": "SETATTR",
          "rename": "RENAME", "link": "LINK", "unlink": "UNLINK", "mkdir": "MKDIR",
          "rmdir": "RMDIR", "readdir": "READDIRPLUS", "statfs": "STATFS",
          "setxattr": "SETXATTR", "getxattr": "GETXATTR", "listxattr": "LISTXATTR",
          "removexattr": "REMOVEXATTR"}
#: Opcodes whose reply the payload corruptions may change (the reply is in the buffer on
#: every transport; an empty reply cannot get shorter).
PAYLOAD_TARGETS = {"reply_long": {"CREATE", "SETATTR", "LINK", "MKDIR", "STATFS", "GETXATTR",
                                  "LISTXATTR", "SETXATTR", "RENAME", "UNLINK", "RMDIR",
                                  "REMOVEXATTR"},
                   "reply_short": {"CREATE", "SETATTR", "LINK", "MKDIR", "STATFS", "GETXATTR",
                                   "LISTXATTR"}}
OPS = ("create", "write", "read", "mmap_read", "mmap_write", "truncate", "rename", "link",
       "unlink", "mkdir", "rmdir", "readdir", "stat", "statfs", "setxattr", "getxattr",
       "listxattr", "removexattr")
CLASSES = ("files", "direct", "mmap", "names", "xattr", "injected", "reply_error",
           "reply_unique", "reply_length")
#: transport-parity's KTAP cases (guest/edge/parity.py): one per call class.
CASES = ("reference_legacy", "exercised", *(f"parity_{c}" for c in CLASSES))


def call_class(call: dict, fired: bool = True) -> str:
    """The parity case a call's divergence counts against: its fault's group when the
    fault fired, else what the call does."""
    f = call.get("fault")
    if f and fired:
        k = f["kind"]
        return ("injected" if k == "errno" else "reply_unique" if k == "unique_wrong"
                else "reply_length" if k in PAYLOAD_KINDS else "reply_error")
    op = call["op"]
    if op.startswith("mmap_"):
        return "mmap"
    if op in ("write", "read") and call.get("direct"):
        return "direct"
    if op in ("rename", "link", "unlink", "mkdir", "rmdir", "readdir"):
        return "names"
    if "xattr" in op:
        return "xattr"
    return "files"


def _args(r: random.Random, op: str, cfg: Config) -> dict:
    """The arguments of one call of op."""
    c: dict = {"op": op}
    if op in ("create", "truncate", "unlink", "stat", "read", "write", "mmap_read", "mmap_write",
              "listxattr"):
        c["path"] = r.choice(FILES)
    if op in ("write", "read", "mmap_read", "mmap_write"):
        c["off"] = r.choice(cfg.offsets())
        c["size"] = r.choice(cfg.sizes())
    if op in ("write", "mmap_write"):
        c["data"] = r.randrange(1 << 30)
    if op in ("write", "read"):
        c["direct"] = r.random() < 0.4
    if op == "truncate":
        c["size"] = r.choice(cfg.sizes())
    if op in ("rename", "link"):
        c["src"], c["dst"] = r.sample(FILES + DIRS if op == "rename" else FILES, 2)
    if op in ("mkdir", "rmdir"):
        c["path"] = r.choice(DIRS)
    if op == "readdir":
        c["path"] = r.choice(("", "d0", "d1"))
    if op in ("setxattr", "getxattr", "removexattr"):
        c["path"] = r.choice(("f0", "f0", "f2", "d0"))
        c["name"] = r.choice(XNAMES)
    if op == "setxattr":
        c["size"] = r.choice(cfg.xattr_sizes(c["name"]))
        c["data"] = r.randrange(1 << 30)
        c["flags"] = r.choice((0, 0, 1, 2))  # XATTR_CREATE, XATTR_REPLACE
    return c


def _fault(r: random.Random, kind: str, req: str) -> dict:
    f = {"req": req, "kind": kind}
    if kind == "errno":
        f["errno"] = r.choice(ERRNOS)
    return f


def fault_fits(kind: str, req: str | None) -> bool:
    """kind may target opcode req."""
    if req is None:
        return False
    return req in PAYLOAD_TARGETS[kind] if kind in PAYLOAD_KINDS else True


def generate(seed: int, n: int = 24) -> list[dict]:
    """n calls for seed (n >= 1): every op at least once when n allows (in a seeded order),
    one probe per corruption kind (statfs, or a root readdir for header corruptions: calls
    that succeed in any state, so the corruption fires), errnos injected into about one call
    in five and always into one plain statfs (whose STATFS is sent in any state, so the
    errno fires); the rest drawn at random. Below 2 x 6 probes: plain calls and random
    errnos only."""
    if n < 1:
        raise ValueError(f"a sequence needs at least one call, not {n}")
    r = random.Random(seed)
    cfg = config_of(seed)
    probes = []
    for kind in (*HEADER_KINDS, *PAYLOAD_KINDS):
        op = "statfs" if kind in PAYLOAD_KINDS or r.random() < 0.5 else "readdir"
        probe = {"op": op, "path": ""} if op == "readdir" else {"op": op}
        probe["fault"] = _fault(r, kind, TARGET[op])
        probes.append(probe)
    if n < 2 * len(probes):  # too short for probes: plain calls only
        probes = []
    ops = list(OPS)
    r.shuffle(ops)
    m = n - len(probes)
    if probes and "statfs" not in ops[:m]:  # the errno probe's call (_errno_probe)
        j = ops.index("statfs")
        ops[m - 1], ops[j] = ops[j], ops[m - 1]
    ops += [r.choice(OPS) for _ in range(max(0, m - len(ops)))]
    calls = [_args(r, op, cfg) for op in ops[:m]]
    for c in calls:
        req = TARGET.get(c["op"])
        c["fault"] = _fault(r, "errno", req) if req and r.random() < 0.2 else None
    for probe in probes:  # spread over the sequence
        calls.insert(r.randrange(len(calls) + 1), probe)
    if probes:
        _errno_probe(r, calls)
    for i, c in enumerate(calls):
        c["i"] = i
    return calls


def _errno_probe(r: random.Random, calls: list[dict]) -> None:
    """Make sure one injected errno fires: the random ones often sit on a call whose request
    is never sent (an unlink whose LOOKUP fails, a setxattr too big for the buffer), so the
    sequence's plain statfs gets one (STATFS is sent whatever the state). Drawn last: the
    rest of the sequence stays what it was."""
    if any(c["op"] == "statfs" and c["fault"] and c["fault"]["kind"] == "errno" for c in calls):
        return
    plain = next(c for c in calls if c["op"] == "statfs" and c["fault"] is None)
    plain["fault"] = _fault(r, "errno", TARGET["statfs"])


def default_seeds(count: int | None = None) -> tuple[int, ...]:
    """The default suite's seeds (one per config, each verified to reach an oversize
    setxattr or a boundary of its config), or the first `count` of an endless list."""
    base = (3, 1, 2)
    if count is None:
        return base
    return tuple(base[:count]) + tuple(range(100, 100 + max(0, count - len(base))))


def parse_seeds(text: str | None) -> tuple[int, ...]:
    """FUSE_HARNESS_PARITY_SEEDS: '' -> the default seeds, 'N' -> N seeds, 'a,b' -> exactly
    those (ValueError with the bad part)."""
    text = (text or "").strip()
    if not text:
        return default_seeds()
    try:
        if "," in text:
            return tuple(int(s) for s in text.split(",") if s.strip())
        n = int(text)
    except ValueError:
        raise ValueError(f"FUSE_HARNESS_PARITY_SEEDS={text!r}: a count or a comma list of seeds") from None
    if n < 1:
        raise ValueError(f"FUSE_HARNESS_PARITY_SEEDS={text!r}: at least one seed")
    return default_seeds(n)


def describe(call: dict) -> str:
    """One line for a call, e.g. `#4 setxattr f0 user.big 8186 bytes [fault SETXATTR errno 5]`."""
    keys = ("path", "src", "dst", "name", "off", "size", "flags")
    parts = [f"#{call.get('i', '?')} {call['op']}"]
    parts += [f"{k}={call[k]}" for k in keys if k in call]
    if call.get("direct"):
        parts.append("O_DIRECT")
    f = call.get("fault")
    if f:
        parts.append(f"[fault {f['req']} {f['kind']}{' ' + str(f['errno']) if 'errno' in f else ''}]")
    return " ".join(parts)
