"""The runs filter syntax: parsing, compiling to parameterised SQL, and errors with positions."""

from __future__ import annotations

import pytest

from workbench.store.run_filter import FilterError, compile_filter, parse


def _resolve(parts, position):
    name = ".".join(parts)
    kinds = {"val_accuracy": "number", "optimizer": "text", "tags": "list", "lr": "number",
             "state": "text", "hp.x": "any"}
    if name not in kinds:
        raise FilterError(f"unknown column {name!r}", position)
    return f"t.{name.replace('.', '_')}", [], kinds[name]


def test_and_or_not_precedence_and_parameters():
    sql, params = compile_filter(
        "val_accuracy > 0.9 and optimizer = adam or not tag:baseline", _resolve)
    assert sql == ("(((TRY_CAST(t.val_accuracy AS DOUBLE) > ?) AND (CAST(t.optimizer AS VARCHAR)"
                   " = ?)) OR (NOT coalesce(list_contains(t.tags, ?), false)))")
    assert params == [0.9, "adam", "baseline"]


def test_values_are_never_sql_text():
    sql, params = compile_filter("optimizer = 'x'' OR 1=1 --'", _resolve)
    assert "1=1" not in sql and params == ["x' OR 1=1 --"]


@pytest.mark.parametrize("text, params", [
    ("state in (failed, cancelled)", ["failed", "cancelled"]),
    ('optimizer ~ "ADA"', ["ADA"]),
    ("lr <= 1e-3", [0.001]),
    ("state:failed", ["failed"]),
    ("tags != b", ["b"]),
    ("(state = a or state = b) and lr >= -2", ["a", "b", -2.0]),
    ("val_accuracy is not null", []),
    ('tag:"two words" and tags = \'it\'\'s here\'', ["two words", "it's here"]),
])
def test_forms(text, params):
    assert compile_filter(text, _resolve)[1] == params


@pytest.mark.parametrize("text, position, fragment", [
    ("", 0, "empty filter"),
    ("val_accuracy >", 14, "expected a value"),
    ("val_accuracy 0.9", 13, "expected an operator"),
    ("(state = a", 10, "expected ')'"),
    ("state = 'a", 8, "unterminated string"),
    ("state = a and", 13, "expected a column name"),
    ("state = a extra", 10, "expected 'and', 'or' or the end"),
    ("lr > fast", 5, "expected a number"),
    ("nope = 1", 0, "unknown column 'nope'"),
    ("state = a ; drop", 10, "unexpected character ';'"),
    ("tags > 3", 7, "is a list of tags"),
    ("state is 3", 9, "expected 'null'"),
    ("tag:two words", 8, 'quote a value that has spaces: tag:"two words"'),
])
def test_errors_name_the_position(text, position, fragment):
    with pytest.raises(FilterError) as info:
        compile_filter(text, _resolve)
    assert info.value.position == position
    assert fragment in str(info.value)


def test_long_filter_refused():
    with pytest.raises(FilterError, match="longer than"):
        parse("state = a and " * 500)
