"""`fuse-harness vm up|down|status`: the command side of a kept guest (harness.vm.kept holds
its state files and the test session's claim on it)."""

from __future__ import annotations

from pathlib import Path

from harness import config
from harness.cache import new_run_dir
from harness.errors import VmError
from harness.kernel import obtain_for
from harness.vm.boot import choose_accel
from harness.vm.kept import Claim, all_states, forget, record
from harness.vm.machine import Vm


def cli(args) -> int:  # noqa: ANN001
    """`fuse-harness vm up|down|status`: keep a guest of the target's kernel running for later
    runs (pytest, `fuse-harness run`) to adopt while that kernel image is unchanged."""
    if args.action == "status":
        states = all_states()
        for path, state in states:
            if state is None:
                print(f"{path.name}: stale (its QEMU is gone)")
                continue
            print(f"Linux {state['kernel_release']} ({state['accel']}) pid {state['pid']}, ssh port "
                  f"{state['port']}, since {state['since']}; image {state['image']}; console {state['console']}")
        if not states:
            print("no kept guest")
        return 0
    if args.action == "down":
        n = sum(forget(path) for path, _ in all_states())
        print(f"stopped {n} kept guest(s)")
        return 0
    return _up(args)


def _up(args) -> int:  # noqa: ANN001
    k = obtain_for(args)
    claim = Claim(k.image)
    if not claim.acquire():
        raise VmError("a test session is using the kept guest of this kernel right now",
                      hint="wait for it to end, or `fuse-harness vm down` to stop it")
    try:
        state, stale = claim.settle()
        if state is not None and stale is None:
            print(f"I: already up: Linux {state['kernel_release']}, pid {state['pid']}, ssh port {state['port']}")
            return 0
        if state is not None:
            print(f"I: the kept guest {stale} (pid {state['pid']}): replacing it")
        settings = config.vm_settings(k.profile, accel=args.accel)
        accel = choose_accel(settings.accel)
        results = Path(args.results_dir)
        run_dir = new_run_dir(results, f"vm-{k.target.name}")
        vm = Vm(k.image, settings, accel, run_dir, rwdirs=(results.resolve(),), runner_repo=config.REPO)
        vm.on_boot = record(k.image, k.built.kernel_release, accel.kind)
        vm.start()
        assert vm.guest is not None
        print(f"I: kept guest up in {vm.boot_seconds:.1f}s: Linux {k.built.kernel_release}, ssh port "
              f"{vm.guest.port}, console {vm.console_path}")
        print("I: runs of this kernel now use it (FUSE_HARNESS_KEPT_VM=0: boot their own); "
              "`fuse-harness vm down` stops it")
        vm.guest.close()
        return 0
    finally:
        claim.release()
