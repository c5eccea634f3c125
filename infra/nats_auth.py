"""NATS credentials: one nkey per credential of ``schemas.nats_permissions``, and the
nats-server ``authorization`` block that lets each one publish and subscribe what it needs.

The seeds (private) are files of their own, ``<dir>/<credential>.nk``, mode 0600, made once
and kept; the server config holds only the public keys. ``make run`` and the test fixtures
call ``NatsCredentials.ensure``; for a deployment::

    python -m infra.nats_auth generate /etc/courier/nats    # seeds + authorization.conf
    python -m infra.nats_auth doc docs/nats-subjects.md     # rewrite the permissions table

then ``include`` ``authorization.conf`` in nats-server's configuration and give each process
its own seed file as ``COURIER_NATS_NKEY_SEED_FILE``.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import nats
import nkeys
from nats.aio.client import Client

from runtime.nkey import user_public_key
from schemas.nats_permissions import CREDENTIALS, Credential, credential

SEED_ENV = "COURIER_NATS_NKEY_SEED_FILE"
SERVER_CONFIG = "authorization.conf"
TABLE_START = "<!-- nats-permissions:start -->"
TABLE_END = "<!-- nats-permissions:end -->"


def new_seed() -> bytes:
    """A fresh user nkey seed (``SU...``)."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed


class NatsCredentials:
    """The seed files of every credential in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def ensure(cls, directory: Path) -> "NatsCredentials":
        """Make the seeds that are missing (0600, in a 0700 directory); keep the others."""
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        for entry in CREDENTIALS:
            path = directory / f"{entry.name}.nk"
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(new_seed() + b"\n")
        return cls(directory)

    def seed_file(self, name: str) -> Path:
        credential(name)  # KeyError for a name the table does not know
        return self.directory / f"{name}.nk"

    def env(self, name: str) -> dict[str, str]:
        """The environment that gives one service process its credential (and only it)."""
        return {SEED_ENV: str(self.seed_file(name))}

    def authorization(self) -> str:
        """The nats-server ``authorization`` block: every credential's public key and its
        permissions. No user without a key, so anonymous connections are refused."""
        users = [_user_block(entry, user_public_key(self.seed_file(entry.name).read_bytes()))
                 for entry in CREDENTIALS]
        return "authorization {\n  users = [\n" + ",\n".join(users) + "\n  ]\n}\n"

    def write_server_config(self) -> Path:
        path = self.directory / SERVER_CONFIG
        path.write_text(self.authorization())
        return path

    async def connect(self, url: str | list[str], name: str, **options: Any) -> Client:
        """A client connection as ``name`` (tests, the bench, operators' scripts)."""
        return await nats.connect(url, nkeys_seed=str(self.seed_file(name)),
                                  inbox_prefix=credential(name).inbox_prefix, **options)


def _user_block(entry: Credential, key: str) -> str:
    def allow(subjects: list[str]) -> str:
        return "{allow: [" + ", ".join(json.dumps(s) for s in subjects) + "]}"

    return (f"    # {entry.name}: {entry.holder}\n"
            f"    {{nkey: {json.dumps(key)}, permissions: {{\n"
            f"      publish: {allow(entry.publish())},\n"
            f"      subscribe: {allow(entry.subscribe())}\n    }}}}")


def permissions_table() -> str:
    """docs/nats-subjects.md's permissions table: credential x grant x publish / subscribe."""
    rows = ["| credential | held by | for | publish | subscribe |", "|---|---|---|---|---|"]
    for entry in CREDENTIALS:
        for index, grant in enumerate(entry.all_grants()):
            who = (f"`{entry.name}`", entry.holder) if index == 0 else ("", "")
            cells = [" ".join(f"`{s}`" for s in subjects) or "-"
                     for subjects in (grant.publish, grant.subscribe)]
            rows.append(f"| {who[0]} | {who[1]} | {grant.purpose} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows) + "\n"


def rewrite_doc(path: Path) -> None:
    text = path.read_text()
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {TABLE_START} ... {TABLE_END} markers")
    path.write_text(pattern.sub(lambda _: f"{TABLE_START}\n{permissions_table()}{TABLE_END}",
                                text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.nats_auth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="seeds (kept if present) and "
                                   f"{SERVER_CONFIG} in DIR")
    generate.add_argument("directory", type=Path)
    doc = commands.add_parser("doc", help="rewrite the permissions table of a markdown file")
    doc.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "doc":
        rewrite_doc(args.path)
        return 0
    path = NatsCredentials.ensure(args.directory).write_server_config()
    print(f"wrote {path}; seeds: {', '.join(f'{c.name}.nk' for c in CREDENTIALS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
