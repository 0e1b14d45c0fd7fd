"""Kernel config: defconfig + fragments, olddefconfig, then verify every requested option.

A requested option that olddefconfig dropped is an error naming the option, the Kconfig
file that defines it and the dependencies that are not met.
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import KconfigError

log = logging.getLogger(__name__)

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Request:
    """One option a fragment asks for: name without CONFIG_, value (y, m, n, "str", 60)."""

    name: str
    value: str
    fragment: str


def parse_config(text: str) -> dict[str, str]:
    """A .config or fragment as {NAME: value}; `# X is not set` becomes 'n'."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _SET.match(line):
            values[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            values[m.group(1)] = "n"
    return values


def requests_of(fragments: list[Path]) -> list[Request]:
    """Every option requested by the fragments; later fragments win."""
    merged: dict[str, Request] = {}
    for frag in fragments:
        for name, value in parse_config(frag.read_text()).items():
            merged[name] = Request(name, value, frag.name)
    return list(merged.values())


def _holds(req: Request, actual: str | None) -> bool:
    if req.value == "n":
        return actual in (None, "n")
    return actual == req.value


def find_definition(tree: Path, name: str) -> tuple[Path, list[str]] | None:
    """The Kconfig file defining `config NAME` and the `depends on` lines of that entry."""
    try:
        out = subprocess.run(
            ["grep", "-rlE", "--include=Kconfig*", f"^(menu)?config {name}$", "."],
            cwd=tree, capture_output=True, text=True, timeout=60,
        ).stdout
    except subprocess.TimeoutExpired:
        return None
    for rel in out.split():
        path = tree / rel
        lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if re.fullmatch(rf"(menu)?config {name}", line.strip()):
                deps: list[str] = []
                for body in lines[i + 1 :]:
                    stripped = body.strip()
                    if re.match(r"(menu)?config |choice|endchoice|menu |endmenu|if |endif|source ", stripped):
                        break
                    if stripped.startswith("depends on "):
                        deps.append(stripped[len("depends on ") :])
                return path.relative_to(tree), deps
    return None


def unmet(deps: list[str], config: dict[str, str]) -> list[str]:
    """Symbols named in `depends on` expressions that are not enabled in config."""
    missing: list[str] = []
    for expr in deps:
        for sym in re.findall(r"(?<![!A-Za-z0-9_])([A-Z][A-Z0-9_]+)", expr):
            if config.get(sym, "n") == "n" and sym not in missing:
                missing.append(sym)
    return missing


def selected_by(tree: Path, name: str, config: dict[str, str]) -> list[str]:
    """Enabled options whose Kconfig entry says `select NAME` (why NAME cannot be switched off)."""
    try:
        out = subprocess.run(
            ["grep", "-rnE", "--include=Kconfig*", rf"^\s*select {name}(\s|$)", "."],
            cwd=tree, capture_output=True, text=True, timeout=60,
        ).stdout
    except subprocess.TimeoutExpired:
        return []
    owners: list[str] = []
    for hit in out.splitlines():
        rel, lineno, _ = hit.split(":", 2)
        lines = (tree / rel).read_text(errors="replace").splitlines()[: int(lineno)]
        owner = next((m.group(2) for x in reversed(lines) if (m := re.match(r"(menu)?config (\w+)", x.strip()))), None)
        if owner and config.get(owner, "n") != "n" and owner not in owners:
            owners.append(owner)
    return owners


def explain_dropped(tree: Path, req: Request, actual: str | None, config: dict[str, str]) -> str:
    """One line saying why an option did not survive olddefconfig."""
    got = "not set" if actual in (None, "n") else f"={actual}"
    line = f"CONFIG_{req.name}={req.value} (from {req.fragment}) is {got} after olddefconfig"
    found = find_definition(tree, req.name)
    if found is None:
        return line + ": no such option in this kernel's Kconfig (misspelt, or removed in this version)"
    path, deps = found
    missing = unmet(deps, config)
    if missing:
        return line + f": it depends on {' && '.join(deps)} ({path}); not enabled: {', '.join(missing)}"
    selectors = selected_by(tree, req.name, config) if req.value == "n" else []
    if selectors:
        return line + f" ({path}): it is selected by {', '.join(selectors)}"
    if deps:
        return line + f": it depends on {' && '.join(deps)} ({path}); check choices and 'select' conflicts"
    return line + f" ({path}): another option or a choice overrides it"


def configure(tree: Path, build_dir: Path, fragments: list[Path], make: list[str], logfile: Path) -> Path:
    """defconfig, merge fragments, olddefconfig in build_dir; verify; return .config path."""
    build_dir.mkdir(parents=True, exist_ok=True)
    dotconfig = build_dir / ".config"
    with logfile.open("a") as out:
        def run(*args: str) -> None:
            out.write(f"$ {' '.join(args)}\n")
            out.flush()
            result = subprocess.run(args, cwd=tree, stdout=out, stderr=subprocess.STDOUT)
            if result.returncode != 0:
                raise KconfigError(f"`{' '.join(args)}` failed", hint=f"see {logfile}")

        run(*make, "defconfig")
        run(
            "scripts/kconfig/merge_config.sh", "-m", "-O", str(build_dir), str(dotconfig),
            *map(str, fragments),
        )
        run(*make, "olddefconfig")
    verify(tree, dotconfig, fragments)
    return dotconfig


def verify(tree: Path, dotconfig: Path, fragments: list[Path]) -> None:
    """Raise KconfigError listing every requested option that does not hold."""
    config = parse_config(dotconfig.read_text())
    problems = [
        explain_dropped(tree, req, config.get(req.name), config)
        for req in requests_of(fragments)
        if not _holds(req, config.get(req.name))
    ]
    if problems:
        raise KconfigError(
            f"{len(problems)} requested kconfig option(s) dropped:\n  " + "\n  ".join(problems),
            hint="fix the fragment in kconfigs/ or enable the missing dependency in a fragment",
        )
    log.debug("kconfig: all %d requested options hold", len(requests_of(fragments)))
