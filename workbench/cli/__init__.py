"""The workbench command: train, watch and query runs, manage keys and nodes, serve the app.

    workbench demo                                   # train the default MLP, print a summary
    workbench train --layers 784,128,64,10 --epochs 5 --optimizer adam --lr 1e-3
    workbench watch r_...                            # follow any run live
    workbench runs --state succeeded
    workbench sql "SELECT name, avg(value) FROM metrics GROUP BY name"
    workbench keys create --name ci --scopes read,train
    workbench sweep spec.json                        # an Optuna sweep, live; workbench sweeps
    workbench serve                                  # the app and REST API on :8765

Every command but ``serve`` and ``worker`` goes through the front door (``workbench.frontdoor``):
it becomes a client of the process that owns ``WORKBENCH_HOME``, starting one on demand.
"""

from __future__ import annotations

import argparse
import sys

from . import bundles, keys, lifecycle, nodes, owner, queries, sweeps, training


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from ..distributed.worker import WorkerTokenError, serve_worker

    logging.getLogger("workbench.distributed").setLevel(logging.INFO)
    try:
        serve_worker(args.host, args.port, token_file=args.token_file, max_ranks=args.max_ranks)
    except WorkerTokenError as exc:
        print(f"workbench worker: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"workbench worker: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


class HelpFormatter(argparse.HelpFormatter):
    """Each flag's default in its help (argparse's ArgumentDefaultsHelpFormatter, without the
    "(default: None)" / "(default: False)" of flags that have none, nor a second mention)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every (sub)command parser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_subparsers(sub))
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench", description=(__doc__ or "").split("\n\n")[0],
        epilog="Settings: WORKBENCH_HOME (the store; default ~/.workbench), WORKBENCH_DATA "
               "(dataset cache), WORKBENCH_OFFLINE=1, WORKBENCH_SERVER_URL and WORKBENCH_TOKEN "
               "(use a server elsewhere). Run 'workbench COMMAND -h' for a command's flags.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    training.add_parsers(sub)
    queries.add_parsers(sub)
    keys.add_parsers(sub)
    nodes.add_parsers(sub)
    owner.add_parsers(sub)
    sweeps.add_parsers(sub)
    lifecycle.add_parsers(sub)  # pause, resume (issue 17)
    bundles.add_parsers(sub)  # bundle export|import, rerun (issue 17)

    p = sub.add_parser("worker", help="run a worker that joins distributed training jobs")
    p.add_argument("--port", type=int, default=5001, help="TCP port to listen on")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (0.0.0.0 for remote coordinators; "
                   "default: %(default)s)")
    p.add_argument("--token-file", default=None,
                   help="file holding the token jobs must present (default: "
                   "$WORKBENCH_WORKER_TOKEN, else $WORKBENCH_HOME/worker.token, generated and "
                   "printed on first start)")
    p.add_argument("--max-ranks", type=int, default=None,
                   help="rank processes running at once, at most (default: the CPU count)")
    p.set_defaults(func=cmd_worker)
    for each in _subparsers(parser):
        each.formatter_class = HelpFormatter
    return parser


def _version() -> str:
    from .. import __version__

    return f"workbench {__version__}"


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)
