"""The house's size rules, kept by a test rather than by review: no module of the operator or the
trainer over 700 lines, and no function over 60 lines of its own (a nested function counts on
its own and not in its parent). Past those sizes a module holds more than one concept and a
function more than one step; split it (DEVELOPMENT.md, "House style")."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import REPO

pytestmark = pytest.mark.unit

PACKAGES = (REPO / "operator" / "scalelab", REPO / "trainer" / "scalelab_trainer")
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 60
Function = ast.FunctionDef | ast.AsyncFunctionDef


def modules() -> list[Path]:
    return sorted(p for root in PACKAGES for p in root.rglob("*.py"))


def functions(tree: ast.AST) -> Iterator[Function]:
    for node in ast.walk(tree):
        if isinstance(node, Function):
            yield node


def own_lines(fn: Function) -> int:
    """Lines of `fn` less those of the functions defined directly inside it."""
    assert fn.end_lineno is not None
    return fn.end_lineno - fn.lineno + 1 - sum(_span(c) for c in _inner(fn))


def _inner(node: ast.AST) -> Iterator[Function]:
    """The functions defined in `node`'s body, not descending into them."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, Function):
            yield child
        else:
            yield from _inner(child)


def _span(fn: Function) -> int:
    assert fn.end_lineno is not None
    return fn.end_lineno - fn.lineno + 1


def test_the_packages_have_modules_to_check() -> None:
    assert len(modules()) > 50


def test_no_module_is_over_700_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in modules()
        if (n := p.read_text().count("\n")) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_60_lines_of_its_own() -> None:
    long = {
        f"{p.relative_to(REPO)}:{fn.lineno} {fn.name}": n
        for p in modules()
        for fn in functions(ast.parse(p.read_text()))
        if (n := own_lines(fn)) > MAX_FUNCTION_LINES
    }
    assert long == {}
