"""codes: the vocabulary is written once. No outcome, verdict, malformed kind or typo class is spelt as a string
literal anywhere in resolverguard/ but codes.py: a misspelt label value must be impossible, not a new series.

Pending other branches (this test fails on them until they land): typo/ (detector: class literals),
transfer.py (export: split into export/), upstream.py (upstream: sans-IO rewrite)."""

from __future__ import annotations

import ast
from pathlib import Path

from resolverguard.codes import RPZ_TARGET_ACTIONS, RPZ_TARGETS, Malformed, Outcome, TypoClass, Verdict

PACKAGE = Path(__file__).resolve().parents[2] / "resolverguard"
VOCABULARIES = (Outcome, Verdict, Malformed, TypoClass)  # upstream failure words (timeout, error) are too common
WORDS = {str(m): f"{type(m).__name__}.{m.name}" for enum in reversed(VOCABULARIES) for m in enum}


def literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant in path that is a vocabulary word, docstrings excepted."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    names = {  # `name = "sink_host"`, name="transfer": a stage's or a thread's name, not a label value
        id(node.value)
        for node in ast.walk(tree)
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "name" for t in node.targets))
        or (isinstance(node, ast.keyword) and node.arg == "name")
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in WORDS
        and id(node) not in docstrings | names
    ]


def test_no_vocabulary_literal_outside_codes():
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r} is {WORDS[text]}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "codes.py"
        for line, text in literals(path)
    ]
    assert not found, "write the codes.py member instead:\n" + "\n".join(found)


def test_the_rpz_target_table_reads_both_ways():
    assert {RPZ_TARGET_ACTIONS[t] for t in RPZ_TARGETS.values()} == set(RPZ_TARGETS)
