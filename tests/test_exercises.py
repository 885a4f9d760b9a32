"""Every exercise checker accepts its reference answer and rejects typical wrong answers;
every exercise in the book that has a checker is called from its chapter."""
import json
import re
from pathlib import Path

import pytest

from lmdownstream import exercises
from lmdownstream.exercises import REGISTRY, ExerciseFailed

ROOT = Path(__file__).resolve().parents[1]
LABELS = sorted(REGISTRY)


@pytest.mark.parametrize("label", LABELS)
def test_checker_accepts_reference(label, capsys):
    checker = REGISTRY[label]
    assert checker(checker.reference) is None  # prints its pass line, echoes nothing
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("label", LABELS)
def test_checker_rejects_typical_wrong_answers(label):
    checker = REGISTRY[label]
    assert checker.wrong_answers, f"{label}: register at least one typical wrong answer"
    for wrong in checker.wrong_answers:
        with pytest.raises(ExerciseFailed) as info:
            checker(wrong)
        assert len(str(info.value)) > 20, "the hint should say what is wrong"


def test_checker_reports_stub_and_non_function():
    checker = REGISTRY[LABELS[0]]

    def stub(*args):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="NotImplementedError"):
        checker(stub)
    with pytest.raises(ExerciseFailed, match="expected a function"):
        checker(3.0)


def _book_sources():
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        yield path.name, "\n".join("".join(c["source"]) for c in nb["cells"])


def test_each_checker_is_used_by_its_chapter():
    sources = dict(_book_sources())
    text = "\n".join(sources.values())
    for label, checker in REGISTRY.items():
        assert re.search(rf":label: {re.escape(label)}\b", text), f"{label} has a checker but no exercise in the book"
        assert f"exercises.{checker.__name__}(" in text, f"no chapter calls exercises.{checker.__name__}"


def test_public_checkers_are_exported():
    for checker in REGISTRY.values():
        assert getattr(exercises, checker.__name__) is checker
