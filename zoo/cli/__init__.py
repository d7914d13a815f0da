"""The `zoo` command: one module per subcommand, each holding its parser (`add_parser`) beside its handler (`run`).

User errors (`ZooError`) print one line on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

from rich.markup import escape

from zoo.cli import bench, convert, data, evaluate, export, info, listing, predict, train
from zoo.cli.options import CommandParser
from zoo.cli.output import err_console
from zoo.core.errors import ZooError

#: in the order `zoo --help` lists them
COMMANDS = (listing, info, data, train, bench, evaluate, predict, convert, export)


def build_parser() -> CommandParser:
    parser = CommandParser(prog="zoo", description="crowd-zoo: count people with P2PNet, CSRNet and CPN models")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ZooError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        return 130
