"""Maintainability rules the project holds itself to (issue #14): short functions, and no dispatch on
method names outside the segmenter registry."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lesionlib"
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions longer than 80 lines:\n" + "\n".join(long)


def test_methods_are_dispatched_only_through_the_registry():
    dispatch = re.compile(r"""(==|!=)\s*["'](unet|resunet|nnunet|lesiongnb)["']|["'](unet|resunet|nnunet|lesiongnb)["']\s*(==|!=)""")
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
                 for path in _modules() if "segmenters" not in path.parts
                 for i, line in enumerate(path.read_text().splitlines(), 1) if dispatch.search(line)]
    assert not offenders, "method-name dispatch outside lesionlib/segmenters:\n" + "\n".join(offenders)
