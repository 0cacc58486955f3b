"""``tokengrpc migrate``: bring the store's schema up to date, as every start does, and say so."""

from __future__ import annotations

import argparse
import asyncio

from tokengrpc.commands.printing import say
from tokengrpc.config import MIGRATE, Settings, add_flags
from tokengrpc.store.open import migrate_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, MIGRATE)


def main(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(migrate(settings))


async def migrate(settings: Settings) -> int:
    _before, after = await migrate_store(settings)
    say(f"schema version {after}")
    return 0
