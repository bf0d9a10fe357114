"""The command line both training scripts share: --out/--seed/--threads/--overwrite, one-line errors."""
from __future__ import annotations

import argparse
import sys


def training_parser(doc: str, out_help: str) -> argparse.ArgumentParser:
    """A parser with the arguments every training script takes; the script adds its schedule's own."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the weights depend on it)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    return parser


def run_training(train, *args, **kwargs) -> int:
    """train(*args, **kwargs) -> exit code: 0, 2 with a one-line error for a user error, 130 when interrupted
    (Ctrl-C or SIGTERM; the temporary output is removed either way)."""
    from models.errors import ModelError
    from models.files import sigterm_as_interrupt

    sigterm_as_interrupt()
    try:
        train(*args, **kwargs)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
