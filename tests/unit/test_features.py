"""The table of transport features and what scenarios declare with it: which transports a
scenario runs over, in which tier, and the guest's answer to a transport that does not fit."""

from __future__ import annotations

import argparse

import pytest

from guest import edge
from guest.transports import base
from guest.transports import features as F
from harness.config import TRANSPORTS


def test_every_transport_of_the_guest_and_the_host_is_in_the_table():
    assert F.TRANSPORTS == base.supported() == TRANSPORTS
    assert tuple(t for t in TRANSPORTS if t != "legacy") == F.RINGS
    assert F.ZERO_COPY == ("zero-copy", "kmbuf-zero-copy")
    for t, have in F.TRANSPORT_FEATURES.items():
        assert not F.unknown(have), t
    for variant, (parent, added) in F.VARIANTS.items():
        assert F.TRANSPORT_FEATURES[variant] == F.TRANSPORT_FEATURES[parent] | {added}


def test_the_table_agrees_with_the_transport_classes():
    for t in F.RINGS:
        cls, have = base.get(t), F.TRANSPORT_FEATURES[t]
        assert bool(cls.zero_copy) == ("zero-copy" in have), t
        assert bool(getattr(cls, "uses_pool", False)) == ("pool" in have), t


def test_having_needs_and_lacks():
    assert F.having(("fixed",)) == ("bufpool-registered", "zero-copy", "kmbuf", "kmbuf-zero-copy")
    assert F.having(("shared-buffers",), ("zero-copy",)) == ("bufpool", "bufpool-registered", "bufring", "kmbuf")
    assert F.missing("iovec", ("shared-buffers",)) == "has no shared-buffers"
    assert F.missing("zero-copy", ("ring",), ("zero-copy",)) == "has zero-copy"
    with pytest.raises(ValueError, match="unknown transport feature 'pinned'"):
        F.having(("pinned",))


def test_every_declaration_names_known_features_and_fits_a_transport():
    for name, s in edge.SCENARIOS.items():
        assert not F.unknown((*(s.needs or ()), *s.lacks, *s.focus, *s.wedges)), name
        if s.needs is not None:
            assert edge.transports_for(name), f"{name}: no transport has what it needs"
        else:
            assert edge.transports_for(name) == () and not (s.lacks or s.focus or s.wedges), name


def test_default_tier_is_the_base_transports_and_the_named_variants():
    teardown = {t: edge.default_tier("abort-fusectl", t) for t in edge.transports_for("abort-fusectl")}
    assert [t for t, d in teardown.items() if not d] == ["bufpool-registered"]  # focus: zero-copy
    loop = [t for t in edge.transports_for("mount-loop") if edge.default_tier("mount-loop", t)]
    assert loop == ["iovec", "bufpool", "bufring", "kmbuf"]
    assert all(edge.default_tier("buffer-table", t) for t in edge.transports_for("buffer-table"))
    assert edge.wedges("oversize-xattr", "kmbuf") and not edge.wedges("oversize-xattr", "bufpool")


def _args(scenario: str, transport: str | None) -> argparse.Namespace:
    return argparse.Namespace(scenario=scenario, transport=transport, budget=None, provoke=False, iterations=1)


def test_the_guest_refuses_a_transport_that_does_not_fit(capsys):
    assert edge.main(_args("buffer-table", "iovec")) == 4
    err = capsys.readouterr().err
    assert "edge buffer-table needs fixed; transport iovec has no fixed" in err
    assert "choose from: bufpool-registered, zero-copy, kmbuf, kmbuf-zero-copy" in err
    assert edge.main(_args("no-sqe128", "bufpool")) == 4
    assert "sets its own rings up: it takes no --transport" in capsys.readouterr().err
    assert edge.transport_problem("register-burst", "zero-copy").startswith(
        "edge register-burst needs ring and no zero-copy, bufring, kmbuf-ring; transport zero-copy has zero-copy")
    assert edge.transport_problem("umount-inflight", None) == ""


def test_the_edge_parser_offers_the_ring_transports():
    parser = argparse.ArgumentParser()
    edge.add_parser(parser.add_subparsers(dest="cmd"))
    assert parser.parse_args(["edge", "abort-fusectl", "--transport", "kmbuf-zero-copy"]).transport == "kmbuf-zero-copy"
    with pytest.raises(SystemExit):
        parser.parse_args(["edge", "abort-fusectl", "--transport", "legacy"])
