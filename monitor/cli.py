"""``rollout-monitor``: the command line.

Sub-commands: ``run`` (the daemon), ``replay`` (files, no Kafka), ``simulate`` (synthetic
streams), ``schema`` (the event JSON Schema), ``check-config`` (effective configuration,
secrets masked), ``dashboards`` (Grafana dashboards). Exit codes: 0 done, 1 failure at run time,
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor.config import ConfigError, Settings, load_settings
from monitor.logs import configure_logging

log = logging.getLogger("monitor")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon

    settings = _settings(args)
    configure_logging(settings.log.level, settings.log.json_lines)
    log.info("configuration: %s", json.dumps(settings.masked_dump()))
    daemon = Daemon(settings)
    daemon.install_signal_handlers()
    return daemon.run()


def cmd_replay(args: argparse.Namespace) -> int:
    from monitor.replay import print_summary, replay

    settings = _settings(args)
    configure_logging(settings.log.level, settings.log.json_lines)
    missing = [p for p in args.paths if not p.is_file()]
    if missing:
        raise ConfigError("input file(s) not found: " + ", ".join(map(str, missing)))
    result = replay(args.paths, settings, alerts_out=args.alerts_out, progress=sys.stderr.isatty())
    print_summary(result)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from monitor.events import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(json.dumps(settings.masked_dump(), indent=2, sort_keys=True))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollout-monitor",
        description="Streaming monitor for RL training of language models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
        return p

    run = with_config(sub.add_parser("run", help="run the daemon (consume from Kafka)"))
    run.set_defaults(func=cmd_run)

    rp = with_config(sub.add_parser("replay", help="run the detectors over JSONL/Parquet files"))
    rp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    rp.add_argument("--alerts-out", type=Path, default=None, help="write alerts as JSON lines")
    rp.set_defaults(func=cmd_replay)

    sc = sub.add_parser("schema", help="print the JSON Schema of a rollout event")
    sc.set_defaults(func=cmd_schema)

    cc = with_config(sub.add_parser("check-config", help="print the effective configuration"))
    cc.set_defaults(func=cmd_check_config)

    from monitor import simulate

    simulate.register(sub)
    try:
        from dashboards import cli as dashboards_cli
    except ImportError:  # the dashboards package is optional at run time
        pass
    else:
        dashboards_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"rollout-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rollout-monitor: aborted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
