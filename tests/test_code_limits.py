"""Functions a newcomer can hold in their head: no product function over 80 lines or with more
than 8 parameters (self/cls aside), so the cuts made for readability stay made."""

import ast

from tests.conftest import REPO

PRODUCT = ("conditioning", "generation", "privacy_audit", "pipelines", "apps")
MAX_LINES, MAX_PARAMS = 80, 8


def _functions():
    for folder in PRODUCT:
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield path.relative_to(REPO), node


def _params(node: ast.FunctionDef) -> int:
    a = node.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    count = len(names) + (a.vararg is not None) + (a.kwarg is not None)
    return count - (1 if names and names[0].arg in ("self", "cls") else 0)


def test_no_long_function_and_no_long_parameter_list():
    over = [
        f"{path}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines, "
        f"{_params(node)} parameters"
        for path, node in _functions()
        if node.end_lineno - node.lineno + 1 > MAX_LINES or _params(node) > MAX_PARAMS
    ]
    assert not over, "split these into steps or bundle their settings:\n" + "\n".join(over)


def test_the_check_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    node = ast.parse(f"def f(a, b, c, d, e, f, g, h, i):\n{body}\n").body[0]
    assert node.end_lineno - node.lineno + 1 > MAX_LINES and _params(node) == 9
