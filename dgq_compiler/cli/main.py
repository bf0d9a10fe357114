"""`dgq` entry point: builds the subcommand parsers and turns user-input errors into exit code 2."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)`, which adds its parser and sets `run=` (args -> exit code).
COMMANDS = ("export", "cost", "compile", "calibrate", "quantize", "reconstruct", "merge-stats", "check", "verify", "run",
            "evaluate", "package", "sensitivity", "allocate", "ablate")

DESCRIPTION = """\
DGQ compiler: export a diffusion UNet to ONNX, calibrate and quantize it with Distribution-aware
Group Quantization, compile the quantized graph, simulate its integer arithmetic and estimate its cost.

pipeline:  export -> calibrate -> quantize [-> reconstruct] -> compile -> verify / check -> cost"""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2 (argparse's own convention, kept terse)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from dgq_compiler import __version__

    parser = _ArgumentParser(prog="dgq", description=DESCRIPTION,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dgq-compiler {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    for name in COMMANDS:
        importlib.import_module(f"dgq_compiler.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed by argparse
        return int(exc.code or 0)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    from dgq_compiler.errors import user_errors
    from dgq_compiler.io import sigterm_as_interrupt

    sigterm_as_interrupt()  # a killed run (SIGTERM) removes its temporaries like Ctrl-C does
    try:
        return int(args.run(args) or 0)
    except user_errors() as exc:
        print(f"dgq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"dgq {args.command}: error: out of memory: expected a smaller --latent-size or --batch "
              "(or more free memory)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dgq {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dgq ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
