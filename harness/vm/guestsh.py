"""The shell commands the harness runs in the guest: the boot script (keepalive), the udev
kill, the kmemleak scan, WARN_ONCE re-arming and the stuck-task check.

Each is one string for the guest's shell (sh or bash: the boot script runs under sh, SSH
commands under the login shell), built from shell builtins where a program would cost an exec
over 9p under TCG.
"""

from __future__ import annotations

import os

#: The boot script's last word before it sleeps (keepalive()), into the kernel log and so the console.
READY = "fuse-harness: guest ready"


def kill_by_comm(pattern: str) -> str:
    """The shell command that SIGKILLs every process whose /proc/PID/comm matches the `case`
    pattern, in two passes (a worker forked while the first one ran is caught by the second).
    Shell builtins only (sh or bash): pkill, which loads procps' and systemd's libraries over
    9p, made the boot script ~1 s slower under TCG."""
    return ("k() { for p in /proc/[0-9]*; do { read -r c < $p/comm; } 2>/dev/null && "
            f"case $c in {pattern}) kill -9 ${{p#/proc/}} 2>/dev/null;; esac; done; }}; k; k")


#: udev in the guest coldplugs devices no test uses (devtmpfs makes the device nodes, and the
#: harness talks over SSH, not vng's virtio-serial ports), yet virtme-ng-init waits for it to
#: settle before it starts the guest's script. Measured here: on the default kernel udev runs
#: 16 s of a 25 s TCG boot but ends about when DHCP does (which SSH needs anyway); on a debug
#: kernel settle waited its full 300 s timeout (udevd was too busy to answer settle's ping,
#: or `udevadm control --exit`). So udevd and its workers are killed twice over: by the boot
#: script (keepalive()), once settle is over, and over SSH once sshd answers while the script
#: has not run yet (settle's wait for the ping's answer then ends with the socket, and the
#: script starts). A udevd left alive costs every test time: each FUSE mount adds a bdi device
#: whose uevent it handles beside the test (the suite's VM part took 1315 s instead of 894 s).
#: FUSE_HARNESS_GUEST_UDEV=1 keeps udev running. systemd 252 names its workers
#: "(udev-worker)".
KILL_UDEV = kill_by_comm("systemd-udevd|udevd|*udev-worker*")
#: KILL_UDEV while settle may still wait: the queue file goes too, or it waits on.
STOP_UDEV = f"{KILL_UDEV}; rm -f /run/udev/queue; true"


def guest_udev() -> bool:
    """FUSE_HARNESS_GUEST_UDEV=1: leave udevd running in the guest (STOP_UDEV)."""
    return os.environ.get("FUSE_HARNESS_GUEST_UDEV", "0") == "1"


def keepalive(runner: str | None = None, stop_udev: bool = True) -> str:
    """The guest's --exec script: hide ~/.bashrc (pyenv init makes every SSH command 6 s
    slower), start the guest runner (`runner`, a background command: it then loads while the
    host connects over SSH and waits for READY, ~5 s under TCG, rather than after), end udev
    (KILL_UDEV: settle is over when the script starts; unless stop_udev is False), say we are
    up, then stay alive until powered off. READY on the console therefore means the boot is
    over: no SSH round trip is needed to learn it."""
    start = f"({runner}); " if runner else ""
    udev = f"{KILL_UDEV}; " if stop_udev else ""
    return (f'mount --bind /dev/null "$HOME/.bashrc" 2>/dev/null; {start}{udev}'
            f"echo {READY} > /dev/kmsg; exec sleep 2147483647")


#: Re-arm WARN_ONCE & co. (needs CONFIG_DEBUG_FS; silently nothing without it).
REARM_WARN_ONCE = (
    "{ [ -e /sys/kernel/debug/clear_warn_once ] || mount -t debugfs none /sys/kernel/debug; "
    "echo 1 > /sys/kernel/debug/clear_warn_once; } 2>/dev/null"
)


#: kmemleak's control file (CONFIG_DEBUG_KMEMLEAK, debugfs); a scan it is told to do prints
#: "kmemleak: N new suspected memory leaks" into the kernel log.
KMEMLEAK = "/sys/kernel/debug/kmemleak"
KMEMLEAK_SCAN = (f"{{ [ -e {KMEMLEAK} ] || mount -t debugfs none /sys/kernel/debug; }} 2>/dev/null; "
                 f"echo scan > {KMEMLEAK}")


#: User tasks in uninterruptible sleep (D) inside FUSE or io_uring after a test (wchan such as
#: request_wait_answer): a client stranded in the kernel that no signal ends, so the next test
#: gets a fresh guest. Kernel threads and tasks in D elsewhere (reading the guest package over
#: 9p right after a boot) are left out.
STUCK_SEP = "@@fuse-harness-stuck-tasks"


def stuck_tasks(state: str = "D", wchan: str = "*fuse*|*request_wait*|*uring*") -> str:
    """The shell command listing user tasks in `state` whose wchan matches the `case` pattern
    `wchan`, one "STATE PID WCHAN ARGS" line each, read from /proc with shell builtins (sh or
    bash; ps and awk cost ~0.3 s of every test under TCG). Kernel threads (PF_KTHREAD,
    0x00200000 in /proc/PID/stat's flags) are left out; a user task with no arguments (one
    exiting, stuck in fuse_flush say) is listed as [comm]; NULs, newlines and carriage returns in
    the arguments become spaces and backslashes stay as they are (printf, not dash's echo, which
    expands "\\n"), so each task is one line. Listed only when still there 2 s
    after a first sighting (a task briefly in D is not stuck)."""
    return ("d() { for p in /proc/[0-9]*; do { read -r s < $p/stat; } 2>/dev/null || continue; "
            "s=${s##*) }; set -- $s; "
            f'[ "$1" = {state} ] && [ $(( ${{7:-0}} & 0x200000 )) -eq 0 ] || continue; '
            "w=; { read -r w < $p/wchan; } 2>/dev/null; "
            f'case "$w" in {wchan}) a=$(tr \'\\0\\n\\r\' \'   \' < $p/cmdline); '
            '[ -n "$a" ] || { read -r a < $p/comm; a="[$a]"; } 2>/dev/null; '
            'printf \'%s\\n\' "$1 ${p#/proc/} $w $a";; esac; '
            "done; }; "
            '[ -z "$(d)" ] || { sleep 2; d; }')


STUCK_TASKS = stuck_tasks()
