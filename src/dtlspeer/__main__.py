"""Command-line interface: ``python -m dtlspeer <command>``.

Commands: ``info`` (versions, build configuration, ciphersuites).
"""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Callable

from . import __version__
from .build_info import build_info, ciphersuites, mbedtls_version


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions, the native build configuration and the ciphersuites."""
    print(f"dtlspeer {__version__}")
    print(f"Mbed TLS {mbedtls_version()} (statically linked)")
    print(f"Python {platform.python_version()} on {platform.system()} {platform.machine()}")
    print("build configuration:")
    for name, value in build_info().items():
        print(f"  {name}: {value}")
    print("ciphersuites (default preference order):")
    for suite in ciphersuites():
        print(f"  {suite}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dtlspeer",
        description="Godot-style UDP and DTLS networking for Python game backends.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    info = sub.add_parser("info", help="print versions, build configuration and ciphersuites")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BrokenPipeError:  # e.g. `python -m dtlspeer info | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
