"""The CLI's help and tables (no server): every flag of every command is described, defaults
are shown, the top line is plain text, and tables never cut ids at 80 columns or when piped."""

from __future__ import annotations

import argparse

import pytest

from workbench.cli import _subparsers, build_parser
from workbench.cli.nodes import _print as print_nodes
from workbench.cli.output import print_table

# `workbench runs` and `workbench sql` are being reworked in their own change.
ELSEWHERE = ("workbench runs", "workbench sql")


def _commands():
    parser = build_parser()
    for each in _subparsers(parser):
        if not each.prog.startswith(ELSEWHERE):
            yield each


def test_every_argument_has_help():
    missing = [f"{p.prog} {a.option_strings or a.dest}" for p in _commands()
               for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
               and not a.help]
    assert missing == []


@pytest.mark.parametrize("argv, shown", [
    (["serve"], ["(default: 8765)", "(default: 127.0.0.1)", "interface"]),
    (["worker"], ["(default: 5001)"]),
    (["train"], ["(default: local)", "(default: auto)"]),
    (["keys", "create"], ["(default: read)"]),
])
def test_help_shows_defaults(argv, shown, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "-h"])
    text = " ".join(capsys.readouterr().out.split())
    for part in shown:
        assert part in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_top_line_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-h"])
    text = capsys.readouterr().out
    assert "``" not in text and "`" not in text and "once the server exists" not in text
    assert "serve the app" in text


NODE = {"id": "node_0123456789abcdef0123456789abcdef", "name": "gpu-box-in-the-basement",
        "status": "online", "region": "eu", "gpu_info": None, "cpu_count": 16,
        "torch_version": "2.5.1", "performance_score": 12.5, "current_load": 0.25,
        "uptime": "3h", "url": "http://gpu-box-in-the-basement.example:8888"}


def test_tables_fold_instead_of_cutting_at_80_columns(capsys):
    rows = [(NODE["id"], NODE["name"], NODE["url"], "succeeded", "x" * 30)]
    print_table(("id", "name", "url", "state", "note"), rows, width=80)
    out = capsys.readouterr().out
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    # Body lines are "│ id piece │ name piece │ ..." : each column's pieces, in order, are the
    # whole value again.
    body = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│")]
    for i, value in enumerate(rows[0]):
        assert "".join(cells[i].strip() for cells in body) == value


def test_nodes_table_piped_keeps_whole_ids(capsys):
    print_nodes(argparse.Namespace(json=False, nodes_command="list"), [NODE])
    out = capsys.readouterr().out  # captured: not a terminal, as in a pipe
    assert NODE["id"] in out and NODE["name"] in out and "…" not in out
