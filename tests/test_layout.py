"""The repository's layout: which parts may depend on which."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmarks_and_tests_do_not_import_each_other() -> None:
    # Tests check and benchmarks measure: a change to a test helper must not move a figure,
    # and `make test` must not depend on code that only `make bench` runs. What both need
    # comes from src/ (or is written twice, small).
    crossings = []
    for tree, forbidden in (("tests", "benchmarks"), ("benchmarks", "tests")):
        for path in sorted((ROOT / tree).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                crossings += [
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {module}"
                    for module in modules
                    if module.partition(".")[0] == forbidden
                ]
    assert crossings == []
