"""Edge-case scenarios: misbehave on purpose with raw uring commands on a real mount.

`python3 -m guest edge SCENARIO [--transport T] [--budget S] [--iterations N]`
prints KTAP (one case per assertion, `# ` lines with the observed CQE res or
errno) and exits 0/1/4 (4: a --transport without the features the scenario needs, or one
given to a scenario that sets its own rings up). Each scenario is bounded by --budget; when
it runs out every connection is aborted through fusectl and lazily unmounted.
Catalog ids refer to fuse-uring-abi.md (the project's shared reference) sections 7 and 10;
the kmbuf-* scenarios (generation D, the posted kmbuf series) to its section 5, the bufring-*
ones (generation B, bufring v2 10/14) to the shared fixture's PORT-NOTES.md.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from guest import time_scale
from guest.parity.gen import CASES as PARITY_CASES
from guest.transports import features as F


class Scenario(NamedTuple):
    """One scenario: guest/edge/<module>.py's <func>, its KTAP cases, its budget (s), its catalog
    id, and what it needs of the transport it is run over (guest/transports/features.py)."""

    module: str
    func: str
    cases: tuple[str, ...]
    budget: float
    catalog: str
    #: Features the transport given with --transport must have; the suite runs the scenario
    #: over every promised transport that has them. None: the scenario sets its own rings up
    #: (no --transport; a test marks the transport whose ABI it uses, if any).
    needs: tuple[str, ...] | None = None
    #: Features the transport must not have: the scenario's point needs what they take away.
    lacks: tuple[str, ...] = ()
    #: Features whose variants (features.VARIANTS) run it in the default tier too.
    focus: tuple[str, ...] = ()
    #: Features with which a run may leave the guest wedged: the test gets a fresh guest after.
    wedges: tuple[str, ...] = ()


#: request-timeout (guest/edge/timeout.py): every ring transport, in generation order (A, C, D).
TIMEOUT_RINGS = ("iovec", "bufpool", "bufpool-registered", "zero-copy", "kmbuf", "kmbuf-zero-copy")
TIMEOUT_STEPS = ("held", "slot_filled", "aborted_in_time", "slot_unreachable", "late_commit_enotconn",
                 "umount_after_timeout")
#: request-timeout's steps that only zero-copy transports have (the held WRITE's buffer slot).
TIMEOUT_SLOT_STEPS = ("slot_filled", "slot_unreachable")


#: payload-lies (guest/edge/lies.py): the opcodes whose reply claims too much, and the claims.
LIE_OPS = ("READ", "READDIR", "LISTXATTR", "GETXATTR", "STATFS")
LIES = ("page_past_buffer", "u32_max")


def lie_cases() -> tuple[str, ...]:
    """payload-lies' case names: one per opcode and lie, then the survivors."""
    return (*(f"{op.lower()}_{lie}_clean" for op in LIE_OPS for lie in LIES),
            "entries_keep_serving", "small_max_write_split_intact")


#: owner-exits (guest/edge/owner.py): the ring set up plainly, then SINGLE_ISSUER|DEFER_TASKRUN.
OWNER_VARIANTS = ("plain", "single_issuer")
OWNER_STEPS = ("owner_exits_holding_requests", "clients_return", "waiting_back_to_zero")


#: teardown-load (guest/edge/load.py): how each round tears its loaded connection down.
LOAD_METHODS = ("abort", "umount_force", "umount_lazy", "server_sigkill")


#: request-timeout-idle (guest/edge/timeout.py): every transport with a ring, each on two mounts of
#: its own, all in one run: they wait for the same timeout scan (about 30 s in all).
IDLE_RINGS = F.having(("ring",))
IDLE_STEPS = ("thread_exit_client_ends_in_time", "thread_exit_umount", "ring_closed_client_ends_in_time",
              "ring_closed_umount")
#: Scenarios that set their own rings up over several transports in one run, their cases named per
#: transport (timeout_case): the transports they may be given with --transports.
OVER_SEVERAL = {"request-timeout-idle": IDLE_RINGS}


def timeout_case(transport: str, step: str) -> str:
    """request-timeout's case name for one transport and step."""
    return f"{transport.replace('-', '_')}_{step}"


def timeout_cases_of(transport: str) -> tuple[str, ...]:
    """request-timeout's cases for one transport (TIMEOUT_SLOT_STEPS: zero-copy ones only)."""
    return tuple(timeout_case(transport, s) for s in TIMEOUT_STEPS
                 if s not in TIMEOUT_SLOT_STEPS or "zero-copy" in transport)


def _timeout_cases() -> tuple[str, ...]:
    return tuple(c for t in TIMEOUT_RINGS for c in timeout_cases_of(t))


_T = ("client_gets_enotconn", "held_commit_enotconn", "idle_entries_enotconn")
RING = ("ring",)
SCENARIOS = {
    "no-sqe128": Scenario("cmds", "no_sqe128", ("no_sqe128_einval", "sqe128_ring_still_works"),
                          30, "G1"),
    "before-mount": Scenario("cmds", "before_mount", ("before_mount_eperm",), 20, "G2"),
    "before-init": Scenario("cmds", "before_init", ("before_init_eagain", "after_init_ok"),
                            30, "G3"),
    "unknown-cmd": Scenario("cmds", "unknown_cmd", ("cmd_op_0_einval", "cmd_op_5_einval",
                                                    "cmd_op_127_einval", "no_poison"), 30, "G7"),
    "add-queue-errors": Scenario("cmds", "add_queue_errors", (
        "qid_out_of_range_einval", "unknown_flag_einval", "first_ok", "twice_eexist",
        "after_register_eexist"), 30, "Q1 Q2 Q4"),
    "add-queue-zc-unpriv": Scenario("cmds", "add_queue_zc_unpriv", (
        "zc_unprivileged_eperm", "zc_root_ok"), 30, "Q3"),
    "add-bufpool-flags": Scenario("cmds", "add_bufpool_flags", (
        "add_queue_ok", "flags_einval", "qid_out_of_range_einval", "valid_after_ok"), 20, "B1"),
    "add-bufpool-errors": Scenario("cmds", "add_bufpool_errors", (
        "no_queue_einval", "reserved_einval", "too_small_einval", "first_ok",
        "second_einval"), 30, "B2 B3 B4 B5"),
    "register-bad-qid": Scenario("cmds", "register_bad_qid", (
        "register_bad_qid_einval", "later_register_eopnotsupp", "later_add_queue_eopnotsupp",
        "file_ops_over_devfuse", "no_ring_traffic"), 60, "R1 P1", needs=RING),
    "register-bad-iov": Scenario("register", "register_bad_iov", (
        "iov_count_1_einval", "iov_count_1_poisons", "iov_array_unmapped_efault",
        "iov_array_unmapped_poisons", "iov_len_top_bit_einval", "iov_len_top_bit_poisons",
        "header_too_short_einval", "header_too_short_poisons", "payload_too_short_einval",
        "payload_too_short_poisons"), 120, "R2 R3 R4 R6 R9"),
    "register-bad-fields": Scenario("cmds", "register_bad_fields", (
        "zc_index_plain_queue_einval", "zc_index_plain_queue_poisons",
        "payload_iov_bufpool_queue_einval", "payload_iov_bufpool_queue_poisons"), 60, "R5 R7"),
    "commit-errors": Scenario("commit", "commit_errors", (
        "qid_out_of_range_einval", "unknown_id_enoent", "int_bit_id_enoent",
        "wrong_qid_enoent", "request_still_pending", "corrected_commit_completes",
        "double_commit_enoent"), 90, "C1 C5", needs=RING),
    "reply-int-bit": Scenario("commit", "reply_int_bit", (
        "client_completes", "no_userspace_reachable_warn"), 60, "E4 W1", needs=RING),
    "notify-retrieve": Scenario("notify", "retrieve", (
        "file_cached", "retrieve_accepted", "nonzero_unique_delivered", "entry_back_in_service",
        "connection_survives", "no_userspace_reachable_warn"), 90, "W3 W2", needs=RING),
    "oversize-xattr": Scenario("oversize", "oversize_xattr", (
        "devfuse_reference", "setxattr_same_as_devfuse", "claimed_reply_rejected", "connection_survives"), 60,
        "U7", needs=("payload-buffers",), wedges=("kmbuf-ring",)),
    "starve-one-buffer": Scenario("starve", "starve_one_buffer", (
        "second_waits_for_buffer", "handed_to_committing_entry", "all_complete",
        "data_intact"), 120, "S1", needs=("shared-buffers",), lacks=("zero-copy",)),
    "starve-hol": Scenario("starve", "starve_hol", ("head_of_line_released", "all_complete", "results_intact"),
                           150, "S3"),
    "bufpool-uaddr-zero": Scenario("starve", "bufpool_uaddr_zero", (
        "uaddr_zero_rejected", "no_permanent_starvation", "abort_recovers"), 90, "S5"),
    "background": Scenario("background", "background", (
        "writeback_batch_over_max_background", "aio_batch_over_max_background", "readahead_parallel",
        "dio_aio_depth32_parallel"), 270, "BG: background requests", needs=RING, focus=("fixed",)),
    "hung-writer": Scenario("hung", "hung_writer", (
        "second_writer_in_d_state", "hung_task_reported", "writers_complete", "data_intact"), 75,
        "harness: HUNG_TASK", needs=("entry-buffers",)),
    "umount-inflight": Scenario("teardown", "umount_inflight", ("read_held", *_T), 90, "T1", needs=RING,
                                focus=("zero-copy",)),
    "abort-fusectl": Scenario("teardown", "abort_fusectl", (
        "read_held", "abort_written", *_T, "later_ops_enotconn"), 90, "T2", needs=RING, focus=("zero-copy",)),
    "kill-server": Scenario("teardown", "kill_server", (
        "server_holds_request", "client_gets_enotconn", "later_ops_enotconn"), 90, "T3", needs=RING,
        focus=("zero-copy",)),
    "ring-closed": Scenario("teardown", "ring_closed", (
        "served_before_close", "client_killable", "abort_written",
        "blocked_client_released"), 90, "T4", needs=RING, focus=("zero-copy",)),
    "thread-exit": Scenario("teardown", "thread_exit", (
        "submitter_registered_and_exited", "client_not_stranded", "abort_written"), 60, "T5", needs=RING,
        focus=("zero-copy",)),
    "owner-exits": Scenario("owner", "owner_exits", tuple(
        f"{v}_{s}" for v in OWNER_VARIANTS for s in OWNER_STEPS), 120, "T6: ring owner exits", needs=RING,
        focus=("fixed",)),
    "teardown-load": Scenario("load", "teardown_load", (
        *(f"{m}_under_load" for m in LOAD_METHODS), "no_ecanceled_to_clients", "killed_clients_depth_1"), 240,
        "T8: teardown under load", needs=RING, focus=("fixed",)),
    "register-burst": Scenario("burst", "register_burst", ("served_after_burst", "abort_during_burst"), 240,
                               "T8: first REGISTERs from one thread per queue at once", needs=RING,
                               lacks=("zero-copy", "bufring", "kmbuf-ring"), focus=("fixed",)),
    "mount-loop": Scenario("teardown", "mount_loop", (
        "all_iterations_ok", "no_leaked_connections"), 300, "T1 (loop)", needs=RING),
    "register-after-ready": Scenario("teardown", "register_after_ready", (
        "served_before", "bad_register_einval", "connection_survives_bad_register",
        "abort_written", "abort_releases_client"), 90, "P2", needs=RING),
    "protected-buffers": Scenario("hostile", "protected_buffers", (
        "header_fault_clean", "survives_header_fault", "payload_fault_clean",
        "survives_payload_fault"), 90, "H1: server breaks its buffers", needs=("payload-buffers",),
        lacks=("zero-copy",), focus=("fixed",)),
    "payload-lies": Scenario("lies", "payload_lies", lie_cases(), 150,
                             "H2: payload sizes that lie", needs=("payload-buffers",), focus=("fixed",)),
    "buffer-table": Scenario("tamper", "buffer_table", tuple(
        f"{t}_{s}" for t in ("slot_replaced", "table_unregistered")
        for s in ("in_flight_clean", "later_clean", "umount_after_abort")), 90, "H7: buffer-table tampering",
        needs=("fixed",), focus=("zero-copy",)),
    "never-ready": Scenario("notready", "never_ready", (
        "clients_wait_for_ready", "client_killable", "abort_releases_client", "umount_after_abort",
        "io_uring_setup_refused", "devfuse_serves_without_io_uring"), 90,
        "H5: ring never ready"),
    "request-timeout": Scenario("timeout", "request_timeout", _timeout_cases(), 120,
                                "T7: request timeout"),
    "request-timeout-idle": Scenario("timeout", "idle_entries_timeout", tuple(
        timeout_case(t, s) for t in IDLE_RINGS for s in IDLE_STEPS), 150,
        "T7: request timeout, idle entries cancelled"),
    "kmbuf-validation": Scenario("kmbuf", "validation", (
        "bad_qid_einval", "unknown_init_flag_einval", "zc_depth_0_einval",
        "zc_without_buf_ring_einval", "no_kmbuf_ring_refused", "mixed_flags_einval",
        "second_queue_same_ring_ealready", "no_sqe128_einval"), 110, "D: R1 G1 + init flags"),
    "kmbuf-small-buffer": Scenario("kmbuf", "small_buffer", (
        "small_buffer_refused", "fitting_request_served", "oversize_payload_bounded"), 60,
        "D: buf_size < max_payload_sz"),
    "kmbuf-unregister-busy": Scenario("kmbuf", "unregister_busy", (
        "unregister_ebusy", "queue_still_serves"), 45, "D: pinned group"),
    "kmbuf-ring-closed": Scenario("kmbuf", "ring_closed_held", (
        "requests_held_with_buffers", "abort_written", "clients_return", "umount_after_abort"),
        90, "D: T4 with pinned groups"),
    "kmbuf-bad-header-index": Scenario("kmbuf", "bad_header_index", (
        "client_not_stranded", "abort_releases_client"), 60,
        "D: headers fixed buffer"),
    "kmbuf-zc-teardown": Scenario("kmbuf_zc", "zc_teardown", (
        "write_held_in_slot", "abort_written", "clients_return", "slot_empty_after_abort",
        "umount_after_abort", "read_held_umount_abort"), 75, "D: zero-copy teardown (PORT-NOTES 7)"),
    "kmbuf-zc-short-read": Scenario("kmbuf_zc", "short_read_tail", (
        "copied_read_tail_zeroed", "short_read_tail_zeroed"), 120,
                                    "D: zero-copy page_zeroing"),
    "kmbuf-commit-async": Scenario("kmbuf", "commit_async", (
        "clients_complete", "buffers_recycled"), 90, "D: IOSQE_ASYNC commit"),
    "kmbuf-commit-no-headers": Scenario("kmbuf_fetch", "commit_without_headers", (
        "second_queued_at_commit", "first_client_answered", "second_client_answered",
        "no_headers_into_unregistered_buffer", "abort_releases_clients", "umount_after_abort"), 60,
        "D: commit_fetch header lookup failure (v4 19/25)"),
    "bufring-validation": Scenario("bufring", "validation", (
        "unknown_flag_einval", "depth_0_einval", "buf_size_0_einval", "headers_short_einval",
        "headers_exact_ok", "buf_size_below_payload_einval", "payload_below_one_buffer_einval",
        "buf_index_depth_einval", "buf_index_last_ok", "bufring_then_legacy_einval",
        "legacy_then_bufring_einval", "bufs_65536_einval", "bufs_65535_ok"), 160,
        "B: REGISTER checks (PORT-NOTES 7, 1-9)"),
    "bufring-starve": Scenario("bufring", "starve", (
        "one_buffer_two_entries", "two_buffers_eight_entries", "mixed_payload_and_none"), 180,
        "B: ENOBUFS starvation (PORT-NOTES 7, 16)"),
    "bufring-idle-entry": Scenario("bufring", "stall", ("staged", "idle_entry_woken", "all_complete"), 150,
                                   "B: idle entry not woken (PORT-NOTES D4, 17)"),
    "bufring-null-payload": Scenario("bufring", "null_payload", ("refused_or_failed_cleanly", "no_crash"), 60,
                                     "B: payload area at 0 (PORT-NOTES D3, 20)"),
    "kmbuf-memlock": Scenario("kmbuf_memlock", "memlock", (
        "unregister_cycles_uncharged", "close_cycles_uncharged"), 60, "D: RLIMIT_MEMLOCK"),
    "transport-parity": Scenario("parity", "transport_parity", PARITY_CASES, 150, "parity: the legacy oracle",
                                 needs=RING, focus=("fixed", "zero-copy")),
}


def supported() -> tuple[str, ...]:
    """Scenario names."""
    return tuple(SCENARIOS)


def transports_for(name: str) -> tuple[str, ...]:
    """The transports scenario `name` runs over (those with its needs and without what it
    lacks, in table order); () for a scenario that sets its own rings up. KeyError for an
    unknown scenario, ValueError for an unknown feature in its declaration."""
    s = SCENARIOS[name]
    return () if s.needs is None else F.having(s.needs, s.lacks)


def default_tier(name: str, transport: str) -> bool:
    """Whether the suite's default tier runs scenario `name` over transport (features.default_tier
    with its needs and focus); False: the slow tier (`-m slow`) only."""
    s = SCENARIOS[name]
    return F.default_tier(transport, (*(s.needs or ()), *s.focus))


def wedges(name: str, transport: str) -> bool:
    """Whether a run of scenario `name` over transport may leave the guest wedged."""
    return bool(F.TRANSPORT_FEATURES[transport] & set(SCENARIOS[name].wedges))


def transport_problem(name: str, transport: str | None) -> str:
    """'' when --transport fits scenario `name` (None: not given), else the error to print."""
    s = SCENARIOS[name]
    if s.needs is None:
        return f"edge {name} sets its own rings up: it takes no --transport" if transport else ""
    if transport is None or transport in transports_for(name):
        return ""
    need = f"needs {', '.join(s.needs)}" + (f" and no {', '.join(s.lacks)}" if s.lacks else "")
    return (f"edge {name} {need}; transport {transport} {F.missing(transport, s.needs, s.lacks)} "
            f"(choose from: {', '.join(transports_for(name))})")


def transports_problem(name: str, transports: list[str] | None) -> str:
    """'' when --transports fits scenario `name` (None: not given), else the error to print."""
    if transports is None:
        return ""
    over = OVER_SEVERAL.get(name)
    if over is None:
        return f"edge {name} takes no --transports (only {', '.join(OVER_SEVERAL)} does)"
    bad = [t for t in transports if t not in over]
    return f"edge {name} runs over {', '.join(over)}, not {', '.join(bad)}" if bad else ""


def _transport_list(text: str) -> list[str]:
    """--transports' value: ring transport names, comma-separated, at least one."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in F.RINGS]
    if not names or bad:
        import argparse

        raise argparse.ArgumentTypeError(f"want ring transports separated by commas (from {', '.join(F.RINGS)}), "
                                         f"not {text!r}")
    return names


def add_parser(sub) -> None:  # noqa: ANN001
    """The `edge` subcommand's arguments."""
    e = sub.add_parser("edge", help="run one edge-case scenario (KTAP)")
    e.add_argument("scenario", choices=(*SCENARIOS, "list"))
    e.add_argument("--transport", default=None, choices=F.RINGS,
                   help="ring transport of the served connection, one with the features the scenario "
                        "needs (`edge list` shows them; default bufpool where it fits, else the first)")
    e.add_argument("--transports", type=_transport_list, default=None, metavar="T,T,...",
                   help=f"{', '.join(OVER_SEVERAL)}: the ring transports to run it over in one go (the "
                        "suite passes those the target promises; default: those the kernel offers, by probe)")
    e.add_argument("--provoke", action="store_true",
                   help="also run the steps that may wedge the guest (kmbuf-small-buffer)")
    e.add_argument("--budget", type=float, default=None, help="seconds (default per scenario)")
    e.add_argument("--iterations", type=int, default=20, help="mount-loop iterations")


def main(args) -> int:  # noqa: ANN001
    """Run args.scenario; returns the KTAP exit code (4: a transport that does not fit)."""
    import sys

    if args.scenario == "list":
        for name, s in SCENARIOS.items():
            over = (", ".join(transports_for(name)) if s.needs is not None
                    else f"(own rings, in one run) {', '.join(OVER_SEVERAL[name])}" if name in OVER_SEVERAL
                    else "(own rings)")
            print(f"{name:22} {s.catalog:12} over: {over}; cases: {' '.join(s.cases)}")
        return 0
    s = SCENARIOS[args.scenario]
    problem = (transport_problem(args.scenario, args.transport)
               or transports_problem(args.scenario, getattr(args, "transports", None)))
    if problem:
        print(f"E: {problem}", file=sys.stderr)
        return 4
    if s.needs is not None and args.transport is None:
        fits = transports_for(args.scenario)
        args.transport = "bufpool" if "bufpool" in fits else fits[0]
    from guest.edge.conn import ensure_enable_uring
    from guest.edge.core import run

    ensure_enable_uring()
    fn = getattr(importlib.import_module(f"guest.edge.{s.module}"), s.func)
    return run(args.scenario, list(s.cases), fn, args, (args.budget or s.budget) * time_scale())


def parser_cases_ok() -> bool:
    """Every scenario names an existing module function (checked without running it)."""
    import ast
    import os

    here = os.path.dirname(__file__)
    for s in SCENARIOS.values():
        with open(os.path.join(here, f"{s.module}.py")) as f:
            tree = ast.parse(f.read())
        if s.func not in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}:
            return False
    return True
