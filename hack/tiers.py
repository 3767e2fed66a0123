"""Which test tiers a pytest command line can run, so hack/test.sh builds only what they start.

Called by hack/test.sh with the arguments it passes on to pytest, before the virtualenv exists
(standard library only). Prints the tier names, space-separated, in suite order; with
`--expression` first, the command line's own -m expression instead (empty without one), which
hack/test.sh narrows to run the node tier in a pytest process of its own.

Every test carries exactly one tier marker (tests/conftest.py enforces it), so a test of tier T
is selected by `-m EXPR` exactly when EXPR is true with T's marker set and the other tiers'
unset. Names in EXPR that are not tiers (other markers) may be either, so a tier counts as
selected when some value of those names makes EXPR true. Without -m, with an empty one, or
with one this parser does not follow (marker keyword arguments), every tier counts: building
too much costs time, building too little fails the run.
"""

from __future__ import annotations

import itertools
import re
import sys

#: The tiers in suite order (tests/conftest.py's TIERS).
TIERS = ("unit", "horovod", "cluster", "prometheus", "node")
#: pytest's marker-expression identifier (_pytest/mark/expression.py).
IDENT = re.compile(r"(?:\w|:|\+|-|\.|\[|\]|\\|/)+")
KEYWORDS = {"and", "or", "not"}
#: Past this many non-tier names the assignments are not enumerated; every tier counts.
MAX_OTHER_NAMES = 10


def marker_expression(args: list[str]) -> str | None:
    """The last -m value among pytest's arguments (`-m EXPR` or `-mEXPR`), None without one."""
    expr = None
    it = iter(args)
    for arg in it:
        if arg == "--":
            break
        if arg == "-m":
            expr = next(it, "")
        elif arg.startswith("-m"):
            expr = arg[2:]
    return expr


def python_form(expr: str) -> tuple[str, list[str]] | None:
    """EXPR as a Python boolean expression over v0, v1, ... and the names they stand for; None
    when EXPR holds anything but names, and/or/not and parentheses."""
    out: list[str] = []
    names: list[str] = []
    pos = 0
    while pos < len(expr):
        if expr[pos] in " \t":
            pos += 1
        elif expr[pos] in "()":
            out.append(expr[pos])
            pos += 1
        elif m := IDENT.match(expr, pos):
            word = m.group()
            if word in KEYWORDS:
                out.append(word)
            else:
                if word not in names:
                    names.append(word)
                out.append(f"v{names.index(word)}")
            pos = m.end()
        else:
            return None
    return " ".join(out), names


def selected(expr: str | None) -> list[str]:
    """The tiers whose tests EXPR can select (all of them when unsure)."""
    if not expr or not expr.strip():
        return list(TIERS)
    form = python_form(expr)
    if form is None:
        return list(TIERS)
    code, names = form
    others = [n for n in names if n not in TIERS]
    if len(others) > MAX_OTHER_NAMES:
        return list(TIERS)
    try:
        compiled = compile(code, "<marker expression>", "eval")
    except SyntaxError:
        return list(TIERS)  # pytest reports the error itself
    tiers = []
    for tier in TIERS:
        for values in itertools.product((False, True), repeat=len(others)):
            known = dict(zip(others, values, strict=True))
            env = {f"v{i}": known.get(n, n == tier) for i, n in enumerate(names)}
            if eval(compiled, {"__builtins__": {}}, env):
                tiers.append(tier)
                break
    return tiers


if __name__ == "__main__":
    if sys.argv[1:2] == ["--expression"]:
        print(marker_expression(sys.argv[2:]) or "")
    else:
        print(" ".join(selected(marker_expression(sys.argv[1:]))))
