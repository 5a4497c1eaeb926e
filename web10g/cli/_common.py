"""What every subcommand shares: argument parsing with the classic exit codes, output."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the classic tools' convention: bad usage exits 1, not 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def fail(prog: str, message: object, code: int = 1) -> int:
    """Print ``prog: message`` on stderr and return the exit code to use."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
