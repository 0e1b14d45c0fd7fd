"""What each transport gives a scenario: one table of features, in the field's terms.

Read by the guest (`python3 -m guest edge --transport` choices, guest.edge.SCENARIOS' `needs`)
and by the host (tests/vm/edge_helpers.transports_for, harness.catalog, the report's scenario x
transport matrix). Standard library only and importing nothing, so both sides can load it.

A scenario that needs features runs over every transport that has all of them (and none of
the features it `lacks`). The suite's default tier runs it over each transport that extends no
other (VARIANTS), and over a variant only when the feature that variant adds is one the
scenario needs or names as its focus; the other variants run in the slow tier (`-m slow`).
"""

from __future__ import annotations

#: Feature -> what it means (docs/edge-cases.md shows this table with the transports of each).
FEATURES = {
    "ring": "requests travel through io_uring ring entries (FUSE_IO_URING_CMD_REGISTER, "
            "COMMIT_AND_FETCH), not read(2)/write(2) on /dev/fuse",
    "payload-buffers": "a request's payload and a reply's go through buffers the server gave the "
                       "kernel, at most max_payload_sz bytes each",
    "entry-buffers": "each entry REGISTERs its own header and payload iovecs (7.2's ABI, generation A)",
    "pool": "7.3's per-queue buffer pool (ADD_QUEUE, ADD_BUFPOOL; generation C): a request takes "
            "a pool buffer at delivery and gives it back at its commit",
    "bufring": "the bufring series' per-queue payload area cut into buffers, the buffer named in "
               "ent_in_out.buf_id (generation B)",
    "kmbuf-ring": "the kmbuf series' kernel-managed buffer ring per queue, the buffer named in the "
                  "request CQE (generation D)",
    "shared-buffers": "a queue's entries share its payload buffers: with fewer buffers than entries "
                      "a request waits for one (pool, bufring, kmbuf ring)",
    "fixed": "the kernel reaches server memory through an io_uring fixed (registered) buffer: the "
             "pool (IORING_URING_CMD_FIXED) or the queue's headers (kmbuf)",
    "zero-copy": "READ/WRITE pages are registered in the entry's buffer slot; the server moves "
                 "them with READ_FIXED/WRITE_FIXED (CAP_SYS_ADMIN)",
}

#: Transport -> its features, in order of increasing features within a generation.
TRANSPORT_FEATURES: dict[str, frozenset[str]] = {
    "legacy": frozenset(),
    "iovec": frozenset({"ring", "payload-buffers", "entry-buffers"}),
    "bufpool": frozenset({"ring", "payload-buffers", "pool", "shared-buffers"}),
    "bufpool-registered": frozenset({"ring", "payload-buffers", "pool", "shared-buffers", "fixed"}),
    "zero-copy": frozenset({"ring", "payload-buffers", "pool", "shared-buffers", "fixed", "zero-copy"}),
    "bufring": frozenset({"ring", "payload-buffers", "bufring", "shared-buffers"}),
    "kmbuf": frozenset({"ring", "payload-buffers", "kmbuf-ring", "shared-buffers", "fixed"}),
    "kmbuf-zero-copy": frozenset({"ring", "payload-buffers", "kmbuf-ring", "shared-buffers", "fixed",
                                  "zero-copy"}),
}

#: Variant -> (the transport it extends, the one feature it adds to it).
VARIANTS = {
    "bufpool-registered": ("bufpool", "fixed"),
    "zero-copy": ("bufpool-registered", "zero-copy"),
    "kmbuf-zero-copy": ("kmbuf", "zero-copy"),
}

TRANSPORTS = tuple(TRANSPORT_FEATURES)
#: Transports served over io_uring (every one but legacy).
RINGS = tuple(t for t, f in TRANSPORT_FEATURES.items() if "ring" in f)
#: Transports whose READ/WRITE data moves with READ_FIXED/WRITE_FIXED (generations C and D).
ZERO_COPY = tuple(t for t, f in TRANSPORT_FEATURES.items() if "zero-copy" in f)


def unknown(features: tuple[str, ...] | frozenset[str]) -> list[str]:
    """The names in features that are not in FEATURES (a typo in a scenario's declaration)."""
    return [f for f in features if f not in FEATURES]


def having(needs: tuple[str, ...], lacks: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Transports that have every feature in needs and none in lacks, in table order.
    ValueError naming an unknown feature."""
    bad = unknown((*needs, *lacks))
    if bad:
        raise ValueError(f"unknown transport feature {bad[0]!r}; known: {', '.join(FEATURES)}")
    return tuple(t for t, f in TRANSPORT_FEATURES.items() if f >= set(needs) and not f & set(lacks))


def missing(transport: str, needs: tuple[str, ...], lacks: tuple[str, ...] = ()) -> str:
    """Why transport does not fit (needs, lacks): '' when it does, else one phrase."""
    have = TRANSPORT_FEATURES[transport]
    absent = [f for f in needs if f not in have]
    extra = [f for f in lacks if f in have]
    parts = ([f"has no {', '.join(absent)}"] if absent else []) + ([f"has {', '.join(extra)}"] if extra else [])
    return " and ".join(parts)


def default_tier(transport: str, named: tuple[str, ...]) -> bool:
    """Whether a scenario naming these features (its needs and focus) runs over transport in
    the default tier: transport extends no other, or the feature it adds is named."""
    variant = VARIANTS.get(transport)
    return variant is None or variant[1] in named
