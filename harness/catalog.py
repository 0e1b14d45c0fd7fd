"""The edge-case catalog page (docs/edge-cases.md), generated from the scenarios themselves.

    python -m harness.catalog            # print the page
    python -m harness.catalog --write    # rewrite docs/edge-cases.md

Two sources, both read without a VM and without importing test code:
- guest/edge/__init__.py's SCENARIOS (name -> module, function, KTAP cases, budget, catalog id),
  and the docstring of each scenario function in guest/edge/<module>.py;
- tests/vm/test_*.py, parsed with `ast`: each test function that calls
  `run_edge(vm, request, run_dir, kernel, SCENARIO, CATALOG, ...)`, its docstring, and its
  transports: a `parametrize` over `transports_for("SCENARIO")` (tests/vm/edge_helpers.py: every
  transport with the features the scenario `needs`, guest/transports/features.py, some of them
  in the slow tier), `@pytest.mark.transport(NAME)` (a scenario that sets its own rings up, on
  the ABI of NAME), or a list of `pytest.param(NAME, marks=pytest.mark.transport(NAME), id=NAME)`
  (inline, a module-level name, or a name imported from tests/vm/edge_helpers.py).

tests/unit/test_catalog.py fails when the page differs from what `render()` returns.
Catalog ids (G1, S3, T7, ...) are the sections of fuse-uring-abi.md, the project's shared
reference on the ABI. A test declaration the parser cannot read raises CatalogError (a
UserError), naming the file and the test.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "edge-cases.md"
TESTS = REPO / "tests" / "vm"
HELPERS = "edge_helpers"


class CatalogError(UserError):
    """A scenario or test declaration the catalog generator cannot read."""


@dataclass
class EdgeTest:
    """One pytest test that runs a guest edge scenario."""

    nodeid: str  # tests/vm/test_x.py::test_y (without the parameter part)
    scenario: str
    catalog: str
    doc: str
    transports: tuple[str, ...]  # () when the test carries no transport: it runs on every target
    slow: tuple[str, ...] = ()  # the transports of `transports` that run in the slow tier only
    by_needs: bool = False  # the transports come from transports_for(scenario)


@dataclass
class Entry:
    """One scenario of guest/edge with the tests that run it."""

    name: str
    catalog: str
    cases: tuple[str, ...]
    budget: float
    guest_doc: str
    source: str  # guest/edge/<module>.py::<function>
    needs: tuple[str, ...] | None = None  # None: the scenario sets its own rings up
    lacks: tuple[str, ...] = ()
    tests: list[EdgeTest] = field(default_factory=list)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _module_names(tree: ast.Module) -> dict[str, ast.expr]:
    """Module-level `NAME = expr` assignments, and names imported from harness.config (the
    transport lists, read from the module itself as tuples of constants)."""
    names: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = node.value
        elif isinstance(node, ast.ImportFrom) and node.module == "harness.config":
            from harness import config

            for alias in node.names:
                value = getattr(config, alias.name, None)
                if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
                    names[alias.asname or alias.name] = ast.Tuple([ast.Constant(v) for v in value], ast.Load())
    return names


def _holds(conds: list[ast.expr], var: str, value: str) -> bool:
    """Whether a list comprehension's `if` clauses hold for var = value: comparisons of var
    with string constants only (`t != "legacy"`, `t in ("a", "b")`), else CatalogError."""
    for cond in conds:
        if not isinstance(cond, ast.Compare) or not all(
                isinstance(n, (ast.Compare, ast.Name, ast.Constant, ast.Tuple, ast.List, ast.Load, ast.cmpop))
                for n in ast.walk(cond)) or any(isinstance(n, ast.Name) and n.id != var for n in ast.walk(cond)):
            raise CatalogError(f"cannot read the condition at line {cond.lineno}",
                               "filter a parameter list with a comparison of its variable and constants")
        if not eval(compile(ast.Expression(cond), "<catalog>", "eval"), {"__builtins__": {}}, {var: value}):
            return False
    return True


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _transport_of_mark(node: ast.expr) -> str | None:
    """NAME of a `pytest.mark.transport(NAME)` call, else None."""
    if isinstance(node, ast.Call) and _dotted(node.func) == "pytest.mark.transport" and node.args:
        value = node.args[0]
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value
    return None


class _Resolver:
    """Turns a parametrize list or a mark name into transport names, by reading the AST."""

    def __init__(self, names: dict[str, ast.expr], helpers: dict[str, ast.expr], where: str) -> None:
        self.names, self.helpers, self.where = names, helpers, where
        self.slow: list[str] = []  # transports a transports_for() list runs in the slow tier
        self.by_needs: set[str] = set()  # the scenarios transports_for() was called with

    def lookup(self, name: str) -> ast.expr:
        if name in self.names:
            return self.names[name]
        if name in self.helpers:
            return self.helpers[name]
        raise CatalogError(f"{self.where}: cannot resolve {name!r} (not a module-level name here or in "
                           f"tests/vm/{HELPERS}.py)", "declare the parameter list as a list of pytest.param")

    def marks(self, node: ast.expr) -> list[str]:
        """Transports of a decorator expression (`pytest.mark.transport(...)` or a name for one)."""
        if isinstance(node, ast.Name):
            node = self.lookup(node.id)
        t = _transport_of_mark(node)
        return [t] if t else []

    def params(self, node: ast.expr, bound: dict[str, str] | None = None) -> list[str]:
        """Transports of a parametrize list: each pytest.param's transport mark, else its value."""
        bound = bound or {}
        if isinstance(node, ast.Name):
            return self.params(self.lookup(node.id))
        if isinstance(node, (ast.List, ast.Tuple)):
            out: list[str] = []
            for elt in node.elts:
                out += self.params(elt.value, bound) if isinstance(elt, ast.Starred) else self.params(elt, bound)
            return out
        if isinstance(node, ast.ListComp) and len(node.generators) == 1:
            gen = node.generators[0]
            seq = gen.iter if not isinstance(gen.iter, ast.Name) else self.lookup(gen.iter.id)
            if isinstance(gen.target, ast.Name) and isinstance(seq, (ast.Tuple, ast.List)):
                values = [e.value for e in seq.elts
                          if isinstance(e, ast.Constant) and _holds(gen.ifs, gen.target.id, e.value)]
                return [t for v in values for t in self.params(node.elt, {gen.target.id: v})]
        if isinstance(node, ast.Call) and _dotted(node.func) == "pytest.param":
            for kw in node.keywords:
                if kw.arg == "marks":
                    marks = kw.value.elts if isinstance(kw.value, (ast.List, ast.Tuple)) else [kw.value]
                    found = [t for m in marks for t in self.marks(self._bind(m, bound))]
                    if found:
                        return found
            return [self._value(node.args[0], bound)]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.Call) and _dotted(node.func) == "transports_for":
            return self.scenario_params(node)
        raise CatalogError(f"{self.where}: cannot read the parameter list at line {node.lineno}",
                           "use pytest.param(NAME, marks=pytest.mark.transport(NAME), id=NAME) items")

    def scenario_params(self, node: ast.Call) -> list[str]:
        """The transports of `transports_for("SCENARIO")`, read from guest.edge (its needs and
        the feature table), its slow-tier ones added to self.slow."""
        from guest import edge

        arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            raise CatalogError(f"{self.where}: transports_for at line {node.lineno} must name one scenario "
                               "as a string literal")
        if arg.value not in edge.SCENARIOS or edge.SCENARIOS[arg.value].needs is None:
            raise CatalogError(f"{self.where}: transports_for({arg.value!r}): not a scenario with `needs`",
                               "declare needs= in its SCENARIOS entry (guest/edge/__init__.py)")
        found = list(edge.transports_for(arg.value))
        self.by_needs.add(arg.value)
        self.slow += [t for t in found if not edge.default_tier(arg.value, t)]
        return found

    def _value(self, node: ast.expr, bound: dict[str, str]) -> str:
        if isinstance(node, ast.Name) and node.id in bound:
            return bound[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        raise CatalogError(f"{self.where}: a pytest.param value at line {node.lineno} is not a transport name")

    def _bind(self, node: ast.expr, bound: dict[str, str]) -> ast.expr:
        """`pytest.mark.transport(t)` with t bound by a comprehension, as a constant."""
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Name) \
                and node.args[0].id in bound:
            return ast.Call(node.func, [ast.Constant(bound[node.args[0].id])], [])
        return node


def _edge_call(func: ast.FunctionDef) -> ast.Call | None:
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and _dotted(node.func) == "run_edge":
            return node
    return None


def _str_arg(call: ast.Call, index: int, name: str, where: str) -> str:
    value = call.args[index] if len(call.args) > index else next(
        (k.value for k in call.keywords if k.arg == name), None)
    if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
        raise CatalogError(f"{where}: run_edge's {name} must be a string literal")
    return value.value


def edge_tests(tests_dir: Path = TESTS) -> list[EdgeTest]:
    """Every test under tests_dir that runs a guest edge scenario, in file and line order."""
    helpers_file = tests_dir / f"{HELPERS}.py"
    helpers = _module_names(ast.parse(helpers_file.read_text())) if helpers_file.is_file() else {}
    found: list[EdgeTest] = []
    for path in sorted(tests_dir.glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = _module_names(tree)
        rel = path.relative_to(tests_dir.parent.parent).as_posix()
        for func in tree.body:
            if not isinstance(func, ast.FunctionDef) or not func.name.startswith("test_"):
                continue
            call = _edge_call(func)
            if call is None:
                continue
            where = f"{rel}::{func.name}"
            res = _Resolver(names, helpers, where)
            transports: list[str] = []
            for deco in func.decorator_list:
                if isinstance(deco, ast.Call) and _dotted(deco.func) == "pytest.mark.parametrize":
                    transports += res.params(deco.args[1])
                else:
                    transports += res.marks(deco) if isinstance(deco, (ast.Name, ast.Call)) else []
            scenario = _str_arg(call, 4, "scenario", where)
            if res.by_needs - {scenario}:
                raise CatalogError(f"{where} runs {scenario!r} over transports_for({sorted(res.by_needs)[0]!r})",
                                   "parametrize a test over its own scenario's transports")
            found.append(EdgeTest(where, scenario, _str_arg(call, 5, "catalog", where),
                                  _one_line(ast.get_docstring(func)), tuple(dict.fromkeys(transports)),
                                  tuple(dict.fromkeys(res.slow)), bool(res.by_needs)))
    return found


def _guest_doc(edge_dir: Path, module: str, func: str) -> str:
    tree = ast.parse((edge_dir / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == func:
            return _one_line(ast.get_docstring(node))
    raise CatalogError(f"guest/edge/{module}.py has no function {func}", "fix SCENARIOS in guest/edge/__init__.py")


def entries(tests_dir: Path = TESTS) -> list[Entry]:
    """Every scenario of guest.edge.SCENARIOS (in its order) with the tests that run it."""
    from guest.edge import SCENARIOS

    edge_dir = REPO / "guest" / "edge"
    out = {name: Entry(name, s.catalog, s.cases, s.budget, _guest_doc(edge_dir, s.module, s.func),
                       f"guest/edge/{s.module}.py::{s.func}", s.needs, s.lacks)
           for name, s in SCENARIOS.items()}
    for t in edge_tests(tests_dir):
        if t.scenario not in out:
            raise CatalogError(f"{t.nodeid} runs unknown scenario {t.scenario!r}",
                               "add it to SCENARIOS in guest/edge/__init__.py")
        if out[t.scenario].needs is not None and not t.by_needs:
            raise CatalogError(f"{t.nodeid}: scenario {t.scenario!r} declares the features it needs, but the "
                               "test picks its transports by hand",
                               f'parametrize it over transports_for("{t.scenario}") (tests/vm/edge_helpers.py)')
        out[t.scenario].tests.append(t)
    return list(out.values())


def _in_one_run(name: str) -> str:
    """The transports a scenario runs over in one guest run (guest.edge.OVER_SEVERAL), '' for
    the others."""
    from guest.edge import OVER_SEVERAL

    over = OVER_SEVERAL.get(name)
    return f"{', '.join(over)} (in one run: those the target promises)" if over else ""


def _transports(e: Entry) -> str:
    if _in_one_run(e.name):
        return _in_one_run(e.name)
    seen: list[str] = []
    slow = {x for t in e.tests for x in t.slow}
    for t in e.tests:
        seen += [x for x in (t.transports or ("(every target)",)) if x not in seen]
    return ", ".join(f"{x} (slow)" if x in slow else x for x in seen) or "(no test: by hand only)"


def _needs(e: Entry) -> str:
    """What the scenario needs of a transport, as the page's table says it."""
    if e.needs is None:
        return "own rings"
    return ", ".join(e.needs) + (f"; not {', '.join(e.lacks)}" if e.lacks else "")


def _feature_table() -> list[str]:
    """The transport features (guest/transports/features.py) as a Markdown table."""
    from guest.transports import features as F

    lines = ["## Transport features", "",
             "| feature | meaning | transports |", "|---|---|---|"]
    for name, meaning in F.FEATURES.items():
        lines.append(f"| `{name}` | {meaning} | {', '.join(F.having((name,)))} |")
    variants = "; ".join(f"`{v}` extends `{base}` with `{added}`" for v, (base, added) in F.VARIANTS.items())
    return [*lines, "", f"Variants: {variants}.", "", "## Scenarios", ""]


def render(tests_dir: Path = TESTS) -> str:
    """The whole page, Markdown."""
    all_entries = entries(tests_dir)
    lines = [
        "# Edge-case catalog",
        "",
        "<!-- Generated by `python -m harness.catalog --write` from guest/edge/__init__.py (SCENARIOS) and",
        "     tests/vm/test_*.py. Do not edit by hand: tests/unit/test_catalog.py compares this file with",
        "     the generator's output. -->",
        "",
        "Each scenario misbehaves on purpose inside the guest (`python3 -m guest edge NAME`) and prints",
        "one KTAP case per expectation; the pytest test records those cases as subtests and fails",
        "with the failing ones. The catalog ids refer to the sections of `fuse-uring-abi.md`, the",
        "project's shared ABI reference. A scenario names the transport features it needs",
        "(`needs`, from guest/transports/features.py) and runs over every transport that has them;",
        "a target that does not promise one skips that test with the reason. `(slow)`: run by",
        "`make test-slow` only (a variant transport whose added feature the scenario does not",
        "name). `own rings`: the scenario sets its rings up itself; a transport marker then names",
        "the ABI it needs, `(every target)` none. Every scenario also ends with the",
        "`strict_server` case (each field the kernel wrote into every request it delivered, checked",
        "against the request itself: guest/transports/strict.py) and the `no_leaks` case",
        "(connections, locked memory, pinned pages back where they were).",
        "",
        *_feature_table(),
        f"{len(all_entries)} scenarios, {sum(len(e.tests) for e in all_entries)} tests.",
        "",
        "| scenario | catalog | needs | transports | test |",
        "|---|---|---|---|---|",
    ]
    for e in all_entries:
        tests = "<br>".join(f"`{t.nodeid.split('::', 1)[1]}`" for t in e.tests) or "-"
        lines.append(f"| [`{e.name}`](#{e.name}) | {e.catalog} | {_needs(e)} | {_transports(e)} | {tests} |")
    for e in all_entries:
        lines += ["", f"## {e.name}", "",
                  f"- catalog: {e.catalog}; guest: `{e.source}`; budget {e.budget:g} s; needs: {_needs(e)}",
                  f"- guest side: {e.guest_doc or '(no docstring)'}"]
        for t in e.tests:
            over = (", ".join(f"{x} (slow)" if x in t.slow else x for x in t.transports)
                    or _in_one_run(e.name) or "every target")
            lines.append(f"- test `{t.nodeid}` ({over}): {t.doc}")
        if not e.tests:
            lines.append(f"- no pytest test runs it; by hand: `python3 -m guest edge {e.name}`")
        lines.append(f"- expects (KTAP cases): {', '.join(f'`{c}`' for c in e.cases)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.catalog",
                                description="print (or --write) docs/edge-cases.md from the edge scenarios")
    p.add_argument("--write", action="store_true", help=f"rewrite {PAGE.relative_to(REPO)}")
    args = p.parse_args(argv)
    try:
        text = render()
    except UserError as exc:
        print(f"E: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"E:   hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    if args.write:
        PAGE.parent.mkdir(exist_ok=True)
        PAGE.write_text(text)
        print(f"wrote {PAGE.relative_to(REPO)}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
