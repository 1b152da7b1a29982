"""The ``e2urec`` command and its exit codes.

Commands: prepare, train, evaluate, unlearn, bench, sequential, audit
(cli/commands.py); deploy, forget, recommend (cli/deploy.py); their arguments
are in cli/parser.py.

Every command checks its inputs and its output before any work; a problem is
one line on stderr and exit code 2, with nothing changed on disk.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
from collections.abc import Sequence

from e2urec.cli.commands import (
    cmd_audit,
    cmd_bench,
    cmd_evaluate,
    cmd_prepare,
    cmd_sequential,
    cmd_train,
    cmd_unlearn,
)
from e2urec.cli.deploy import cmd_deploy, cmd_forget, cmd_recommend
from e2urec.cli.parser import build_parser
from e2urec.config import ConfigError

COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "evaluate": cmd_evaluate,
            "unlearn": cmd_unlearn, "bench": cmd_bench, "deploy": cmd_deploy,
            "forget": cmd_forget, "recommend": cmd_recommend, "sequential": cmd_sequential,
            "audit": cmd_audit}


def main(argv: Sequence[str] | None = None) -> int:
    from e2urec.fileio import LockedError
    from e2urec.runtime import quiet_progress_bars, set_threads

    args = build_parser().parse_args(argv)
    quiet_progress_bars()
    try:
        if args.command not in ("bench", "sequential"):  # a study sets its own threads
            set_threads(args.threads)
        return COMMANDS[args.command](args)
    except (ConfigError, ValueError, FileNotFoundError, NotADirectoryError,
            PermissionError, LockedError, sqlite3.DatabaseError) as err:
        message = str(err).strip().splitlines()
        print(f"e2urec {args.command}: error: {message[0] if message else type(err).__name__}",
              file=sys.stderr)
        for line in message[1:]:
            print(f"  {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head` closed the pipe: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = err.filename or "the output folder"
        print(f"e2urec {args.command}: error: no space left on the device ({where}): every "
              "write is atomic, so what was being written is not there; free space and run "
              "the same command again", file=sys.stderr)
        return 2
