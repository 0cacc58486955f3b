"""The ``tokengrpc`` command's entry point: parse, read the settings, dispatch.

Each command lives in ``tokengrpc/commands/``, one module each; this module
only knows their names. The settings of every command come from the table in
``tokengrpc/config.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from tokengrpc import corelog, logs
from tokengrpc.commands import gateway, migrate, scan, serve, token
from tokengrpc.config import (
    GATEWAY,
    MIGRATE,
    SERVE,
    SettingError,
    Settings,
    from_json,
    resolve,
    secrets_epilog,
)
from tokengrpc.errors import DomainError
from tokengrpc.store.postgres.dsn import has_password
from tokengrpc.supervise import WorkerPipes, read_settings
from tokengrpc.version import version

log = logging.getLogger("tokengrpc")

Command = Callable[[argparse.Namespace, Settings], int]

#: name, help, the module that adds its arguments and runs it, the settings' command.
_COMMANDS = (
    ("serve", "run the gRPC service and the HTTP gateway", serve, SERVE),
    ("gateway", "run the HTTP gateway alone, in front of a gRPC server", gateway, GATEWAY),
    ("token", "administer tokens directly in the store", token, None),
    ("migrate", "bring the store's schema up to date, print its version, exit", migrate, MIGRATE),
    ("scan", "find tokens in files before they leak: path:line:column each", scan, None),
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tokengrpc",
        description="An API-token service: gRPC, an HTTP gateway, and token administration.",
    )
    top.add_argument("--version", action="version", version=f"tokengrpc {version()}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text, module, settings_of in _COMMANDS:
        command = commands.add_parser(
            name,
            help=text,
            description=text,
            epilog=secrets_epilog(settings_of) if settings_of else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        run: Command = module.main
        command.set_defaults(run=run)
    return top


def _settings(args: argparse.Namespace) -> Settings:
    """A worker's are its parent's, whole; anyone else's come from variables and flags."""
    supervised: WorkerPipes | None = getattr(args, "supervised", None)
    if supervised is not None:
        return from_json(read_settings(supervised))
    return resolve(os.environ, args)


def _warn_password_on_command_line(args: argparse.Namespace) -> None:
    """A ``--database`` password shows in the process list (``ps``, ``/proc``) to everyone."""
    url = getattr(args, "database_url", None)
    if url and has_password(url):
        log.warning(
            "the --database URL holds a password, which any user of this machine can read"
            " in the process list; give the URL in TOKENGRPC_DATABASE_URL instead, or the"
            " password in PGPASSWORD or ~/.pgpass"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingError as error:
        if str(error).startswith("TOKENGRPC_"):
            print(f"tokengrpc: a TOKENGRPC_ variable is not valid: {error}", file=sys.stderr)
        else:
            print(f"tokengrpc: {error}", file=sys.stderr)
        return 2
    if args.command in ("serve", "gateway"):
        corelog.capture()  # gRPC core's lines too, in our format (corelog.py)
    # From here on every message goes through logging, in the chosen format
    # (the commands' results and serve's start-up lines stay on stdout).
    logs.configure(settings.log_format, access_log=settings.access_log)
    _warn_password_on_command_line(args)
    run: Command = args.run
    try:
        return run(args, settings)
    except (OSError, ValueError) as error:
        log.error("%s", error)
        return 2
    except DomainError as error:  # the store refused a start-up write (a full disk)
        log.error("%s", error.message)
        return 2


if __name__ == "__main__":
    sys.exit(main())
