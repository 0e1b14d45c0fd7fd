"""`fuse-harness mutate`: how much of a series (or a file) the suite would notice going wrong.

    ctext      C text with comments/strings/preprocessor masked; functions by brace matching
    operators  the mutation operators (cond-negate, cond-drop, relop, off-by-one, call-drop,
               check-drop, errcode-zero) and the Mutant
    scope      series-added lines or a file/function; the seeded sample
    guard      apply a mutant and always restore (finally, signals, a recovery journal)
    workspace  the private tree, its pinned build folder, the derived target
    ledger     records, resume, the catchers of earlier mutants, outcome classification
    baseline   the suite on the unmutated tree: must pass; bounds each mutant; times its tests
    drive      the loop and the kernel evaluator (build + one pytest session per mutant)
    order      the pytest plugin: likely catchers first, then quick tests first
    cli        the subcommand
"""

from harness.mutate.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
