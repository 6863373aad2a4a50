"""The command line (DESIGN §7). Parsing and output only; the work lives in the packages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from noderescue import __version__

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message on one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="noderescue", description="Keeps Kubernetes nodes healthy from outside.")
    parser.add_argument("--version", action="version", version=f"noderescue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)

    sim = sub.add_parser("sim", help="the emulated cluster (needs the 'sim' extra)")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, parser_class=_Parser)
    serve = sim_sub.add_parser("serve", help="start the emulated cluster and run until stopped")
    serve.add_argument("--scenario", required=True, help="a built-in scenario name or a YAML file")
    serve.add_argument("--out", required=True, type=Path, help="directory for kubeconfig, env, ...")
    serve.add_argument("--time-scale", type=float, default=1.0, help="emulated seconds per second")
    serve.add_argument("--port", type=int, default=0, help="Kubernetes API port (0: any free port)")
    return parser


def cmd_check_config(file: Path) -> int:
    from noderescue.config import ConfigError, load_config

    try:
        config = load_config(file)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_USAGE
    print("ok")
    for line in config.summary_lines():
        print(f"  {line}")
    return EXIT_OK


def cmd_sim_serve(args: argparse.Namespace) -> int:
    try:
        from noderescue.sim.serve import serve
    except ImportError as exc:  # moto/flask/trustme missing: tell which extra brings them
        print(
            f"noderescue sim needs the 'sim' extra ({exc.name} is missing): "
            "pip install 'noderescue[sim]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return serve(args.scenario, args.out, time_scale=args.time_scale, port=args.port)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return cmd_check_config(args.file)
    if args.command == "sim":
        return cmd_sim_serve(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices
