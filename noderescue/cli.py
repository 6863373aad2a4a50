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
    check.add_argument(
        "--strict", action="store_true", help="warnings (e.g. a secret written inline) are errors (exit 2)"
    )
    _add_operator_commands(sub)

    run = sub.add_parser("run", help="the daemon")
    run.add_argument("--config", required=True, type=Path, help="configuration file (YAML)")
    run.add_argument("--dry-run", action="store_true", help="plan and log, change nothing")
    run.add_argument("--once", action="store_true", help="one full pass, then exit")
    run.add_argument("--log-level", default="info", help="debug, info, warning or error")
    demo = sub.add_parser("demo", help="emulated cluster + the real daemon, a live timeline")
    demo.add_argument("--scenario", default="demo", help="a built-in scenario name or a YAML file")

    sim = sub.add_parser("sim", help="the emulated cluster (needs the 'sim' extra)")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, parser_class=_Parser)
    serve = sim_sub.add_parser("serve", help="start the emulated cluster and run until stopped")
    serve.add_argument("--scenario", required=True, help="a built-in scenario name or a YAML file")
    serve.add_argument("--out", required=True, type=Path, help="directory for kubeconfig, env, ...")
    serve.add_argument("--time-scale", type=float, default=1.0, help="emulated seconds per second")
    serve.add_argument("--port", type=int, default=0, help="Kubernetes API port (0: any free port)")
    return parser


def cmd_check_config(file: Path, *, strict: bool = False) -> int:
    from noderescue.config import ConfigError, load_config_report
    from noderescue.config_checks import file_warnings

    try:
        config, warnings = load_config_report(file)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_USAGE
    warnings = sorted({*warnings, *file_warnings(file)}, key=lambda w: (w.line or 0, str(w)))
    if strict and warnings:
        print(ConfigError(warnings, str(file)).render() + " (--strict: warnings are errors)", file=sys.stderr)
        return EXIT_USAGE
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("ok")
    for line in config.summary_lines():
        print(f"  {line}")
    from noderescue.config_trust import trust_warnings

    for trust in trust_warnings(config):
        print(f"warning: {trust}", file=sys.stderr)
    return EXIT_OK


OPERATOR_COMMANDS = {
    "plan": "one read-only pass: every node, its health, what would happen now and why",
    "status": "remediation records, parked nodes, pause, rate-limit usage and gate states",
    "pause": "stop starting remediations (durable, cluster-wide)",
    "resume": "undo pause",
}


def _add_operator_commands(sub: argparse._SubParsersAction[_Parser]) -> None:
    for name, help_text in OPERATOR_COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", required=True, type=Path, help="the daemon's configuration file")
        cmd.add_argument("--cluster", help="only this cluster (default: every cluster in the configuration)")
        if name in ("plan", "status"):
            cmd.add_argument(
                "-o", "--output", choices=("table", "json"), help="default: table on a terminal, else json"
            )
        if name == "pause":
            cmd.add_argument("--reason", help="shown by status and in the skip reasons (default: who paused)")


def cmd_operator(args: argparse.Namespace) -> int:
    from noderescue.config import ConfigError, load_config
    from noderescue.runtime.logs import configure_logging
    from noderescue.runtime.oneshot import UnknownCluster, run_plan, run_status
    from noderescue.runtime.operator import default_reason, run_switch

    configure_logging(level="warning")  # stderr: stdout carries the table or JSON document
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(exc.render() + "\n")
        return EXIT_USAGE
    try:
        if args.command == "plan":
            return run_plan(config, cluster=args.cluster, output=args.output)
        if args.command == "status":
            return run_status(config, cluster=args.cluster, output=args.output)
        reason = (args.reason or default_reason()) if args.command == "pause" else None
        return run_switch(config, cluster=args.cluster, pause_reason=reason)
    except UnknownCluster as exc:
        sys.stderr.write(f"noderescue: {exc}\n")
        return EXIT_USAGE


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
        return cmd_check_config(args.file, strict=args.strict)
    if args.command == "sim":
        return cmd_sim_serve(args)
    if args.command in OPERATOR_COMMANDS:
        return cmd_operator(args)
    if args.command == "run":
        from noderescue.runtime.app import cmd_run

        return cmd_run(args)
    if args.command == "demo":
        from noderescue.runtime.demo import cmd_demo

        return cmd_demo(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices
