"""harness.mutate.ctext and .operators on small C snippets."""

from __future__ import annotations

import pytest

from harness.mutate import ctext, operators


def mutants(body: str, op: str | None = None) -> list[tuple[str, str, str]]:
    """(operator, original, replacement) of the mutants of `body` inside a function."""
    text = f"static int f(int n)\n{{\n{body}\n}}\n"
    masked = ctext.mask(text)
    ranges = [(f.body_start, f.body_end + 1, f.name) for f in ctext.functions(masked)]
    found = operators.generate("x.c", text, masked, None, ranges)
    for m in found:
        assert m.apply(text) != text and m.function == "f"
    return [(m.operator, m.original, m.replacement) for m in found if op is None or m.operator == op]


def test_mask_keeps_length_and_lines_and_blanks_comments_strings_preprocessor() -> None:
    text = ('#include <a.h>\n#define M(x) \\\n\t((x) < 2)\nint a = 1; // if (x < 2)\n'
            'char *s = "if (a > b)"; /* x\n < y */ char c = \'<\';\n')
    masked = ctext.mask(text)
    assert len(masked) == len(text) and masked.count("\n") == text.count("\n")
    assert "<" not in masked and ">" not in masked and "include" not in masked and "if" not in masked
    assert 'char *s = "' in masked and "int a = 1;" in masked


def test_nothing_in_comments_strings_or_macros_is_mutated() -> None:
    body = ('\t/* if (n < 3) return -EINVAL; spin_unlock(&l); */\n'
            '\t// while (n >= 2) wake_up(&q);\n'
            '\tpr_info("if (a < b) return -EIO; kfree(p);");\n'
            '#define BAD(x) if (x < 1) return -EINVAL\n'
            '\treturn 0;')
    assert mutants(body) == []


def test_cond_negate_if_and_while() -> None:
    found = mutants("\tif (n)\n\t\tn--;\n\twhile (n & 4)\n\t\tn++;", "cond-negate")
    assert found == [("cond-negate", "n", "!(n)"), ("cond-negate", "n & 4", "!(n & 4)")]


def test_cond_drop_splits_the_loosest_operator_first() -> None:
    found = mutants("\tif (a && b || c)\n\t\tn++;", "cond-drop")
    assert sorted(r for _, _, r in found) == ["a && b", "c"]
    found = mutants("\tif (a && (b || c) && d(x, y))\n\t\tn++;", "cond-drop")
    assert sorted(r for _, _, r in found) == ["(b || c) && d(x, y)", "a && (b || c)", "a && d(x, y)"]


def test_relop_swaps_but_never_shifts_or_arrows() -> None:
    found = mutants("\tif (a < b && c >= d && p->x > 1 && (e << 2) && (f >> 1) && g <= h)\n\t\tn <<= 1;",
                    "relop")
    assert [(o, r) for _, o, r in found] == [("<", "<="), (">=", ">"), (">", ">="), ("<=", "<")]


def test_off_by_one_on_compared_and_added_literals() -> None:
    found = mutants("\tif (n < 16 || 0x10 == n)\n\t\treturn n + 1;\n\treturn -1;", "off-by-one")
    assert sorted((o, r) for _, o, r in found) == [("0x10", "15"), ("0x10", "17"), ("1", "0"), ("1", "2"),
                                                   ("16", "15"), ("16", "17")]  # `return -1`: a sign


def test_call_drop_only_whole_statements_of_listed_calls() -> None:
    body = ("\tspin_lock(&q->lock);\n\tspin_unlock(&q->lock);\n\tif (n)\n\t\twake_up_all(&q->wq);\n"
            "\telse\n\t\tfuse_request_end(req);\nout:\n\tfuse_put_request(req);\n"
            "\tn = kfree_thing(p);\n\treturn n ? 0 : kfree(p);")
    found = mutants(body, "call-drop")
    assert [o for _, o, _ in found] == ["spin_unlock(&q->lock);", "wake_up_all(&q->wq);",
                                       "fuse_request_end(req);", "fuse_put_request(req);"]
    assert all(r == ";" for _, _, r in found)


@pytest.mark.parametrize("tail", ["return -EINVAL;", "{ return -EINVAL; }", "return ERR_PTR(-ENOMEM);",
                                  "goto out;", "{\n\t\t/* said */\n\t\tgoto out;\n\t}"])
def test_check_drop(tail: str) -> None:
    found = mutants(f"\tif (n > 4)\n\t\t{tail}\nout:\n\treturn 0;", "check-drop")
    assert found == [("check-drop", "n > 4", "0")]


def test_no_check_drop_for_other_bodies() -> None:
    assert mutants("\tif (n > 4)\n\t\treturn 0;\n\tif (n)\n\t\tn = -EINVAL;", "check-drop") == []


def test_errcode_zero_in_return_and_assignment_only() -> None:
    found = mutants("\tint err = -EIO;\n\tif (n == -EAGAIN)\n\t\treturn -EINVAL;\n\terr = -ENOMEM;\n\treturn err;",
                    "errcode-zero")
    assert [o for _, o, _ in found] == ["-EIO", "-EINVAL", "-ENOMEM"]


def test_functions_by_brace_matching() -> None:
    text = ("struct s { int a; };\nstatic const int t[] = { 1, 2 };\n"
            "static void g(struct s *p)\n\t__releases(p->lock)\n{\n\tif (p) { p->a = 1; }\n}\n"
            "int h(void) { return 0; }\n")
    fs = ctext.functions(ctext.mask(text))
    assert [(f.name, f.line) for f in fs] == [("g", 3), ("h", 8)]
    assert text[fs[0].body_start] == "{" and text[fs[0].body_end] == "}"
    assert ctext.find_function(ctext.mask(text), "nope") is None


def test_mutants_outside_ranges_and_allowed_lines_are_left_out() -> None:
    text = "int a = 1 < 2;\nint f(int n)\n{\n\tif (n < 1)\n\t\treturn 0;\n\treturn n > 2;\n}\n"
    masked = ctext.mask(text)
    ranges = [(f.body_start, f.body_end + 1, f.name) for f in ctext.functions(masked)]
    lines = {m.line for m in operators.generate("x.c", text, masked, {6}, ranges)}
    assert lines == {6}
    assert all(m.line >= 4 for m in operators.generate("x.c", text, masked, None, ranges))


def test_mutant_id_is_stable_and_apply_checks_the_text() -> None:
    m = operators.Mutant("x.c", 1, "relop", 2, 3, "<", "<=")
    assert m.id == operators.Mutant("x.c", 1, "relop", 2, 3, "<", "<=", "f").id
    assert m.apply("a < b") == "a <= b"
    with pytest.raises(ValueError):
        m.apply("a > b")
