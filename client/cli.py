"""``python -m client``: try Courier from a terminal.

  register --user alice              register a device, print its credentials as JSON
  chat --user alice --to bob         interactive: lines you type are sent, messages printed;
                                     "/file PATH" sends a file (encrypted, see attachments)
  chat --user alice --group team     the same in a group (``/verify USER`` works there too)
  send --user alice --to bob TEXT    send one message and print the server's acceptance
  listen --user bob                  print incoming messages until Ctrl-C

``--balancer URL`` opens the socket on the gateway the balancer chooses (and goes back through
the balancer when that gateway drains or the connection is lost); ``--url`` still names the
gateway for registration and REST calls.

Devices are registered through the embedded-mode endpoint; credentials are cached per server
and user in ``~/.cache/courier-client`` (``--device LABEL`` keeps another cached device of the
same user; ``--fresh`` registers a one-off device and leaves the cache alone, so a terminal
already running as that user keeps its device).

Messages are end-to-end encrypted (``client.e2ee``, docs/e2ee.md): each device's keys and
sessions live beside its credentials (``<device>.e2ee``, pickled with the random key in
``<device>.key``; an app keeps that key in the platform's keychain instead). In ``chat``,
``/verify USER`` prints the safety number to compare with USER's, ``/trust USER`` records that
they matched; a warning is printed when a device's keys change.
Files sent with ``/file PATH`` are encrypted before upload (``client.attachments``); the key
travels inside the end-to-end encrypted message. Files received by ``chat`` and ``listen`` are
saved in ``--files-dir`` (default ``./courier-files``).
"""

import argparse
import asyncio
import os
import re
import sys
from pathlib import Path

import msgspec

from client.attachments import AttachmentError, FileBody, download, file_body, send_file
from client.crypto.machine import Decrypted, OlmMachine, Undecryptable
from client.e2ee import E2eeError, SecureClient
from client.sdk import BalancerError, ClientError, CourierClient, Credentials, register_device
from schemas.frames import Message

CACHE = Path.home() / ".cache" / "courier-client"


def _print_message(message: Message) -> None:
    sender = message.sender.user or message.sender.service or "?"
    text = message.body.decode("utf-8", errors="replace")
    print(f"[{message.conversation} #{message.seq}] {sender}: {text}", flush=True)


def _print_result(result: Decrypted | Undecryptable | Message) -> None:
    if isinstance(result, Message):
        _print_message(result)
    elif isinstance(result, Decrypted):
        print(f"[{result.conversation} #{result.seq}] {result.sender}: {result.text}",
              flush=True)
    else:
        print(f"[{result.conversation} #{result.seq}] {result.sender}: <cannot decrypt: "
              f"{result.reason}: {result.detail}>", flush=True)


def _server_dir(url: str) -> Path:
    return CACHE / re.sub(r"[^A-Za-z0-9]+", "_", url.split("://", 1)[-1]).strip("_")


def cache_path(url: str, user: str, label: str | None) -> Path:
    """Where the credentials of ``user``'s device ``label`` on the server at ``url`` live:
    tokens of one server are useless on another, so each server has its own folder."""
    return _server_dir(url) / (f"{user}.json" if label is None else f"{user}.{label}.json")


def machine_for(url: str, creds: Credentials) -> OlmMachine:
    """The device's encryption state, and its pickle key (made on first use, mode 0600)."""
    folder = _server_dir(url) / "e2ee"
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / f"{creds.device}.key"
    if not key_path.exists():
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(os.urandom(32))
    return OlmMachine.open(creds.user, creds.device, key_path.read_bytes(),
                           folder / f"{creds.device}.e2ee")


async def credentials(url: str, user: str, *, fresh: bool = False,
                      label: str | None = None) -> Credentials:
    """The cached device of ``user`` (registered on first use), or with ``fresh`` a new
    device that is not cached, so the cached one stays with whoever uses it."""
    if fresh:
        return await register_device(url, user)
    path = cache_path(url, user, label)
    if path.exists():
        return msgspec.json.decode(path.read_bytes(), type=Credentials)
    creds = await register_device(url, user)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(msgspec.json.encode(creds))
    return creds


async def _cli_credentials(args: argparse.Namespace) -> Credentials:
    return await credentials(args.url, args.user, fresh=args.fresh, label=args.device)


class _Session:
    """A connected, encrypting device of the CLI."""

    def __init__(self, client: CourierClient, secure: SecureClient, files_dir: Path) -> None:
        self.client = client
        self.secure = secure
        self.files_dir = files_dir
        self._warned = len(secure.machine.key_changes)

    def warn_key_changes(self) -> None:
        changes = self.secure.machine.key_changes
        for change in changes[self._warned:]:
            print(f"warning: {change.user}'s device {change.device} has new keys; "
                  f"compare safety numbers again (/verify {change.user})", file=sys.stderr,
                  flush=True)
        self._warned = len(changes)

    async def send(self, args: argparse.Namespace, text: str) -> None:
        try:
            if text.startswith("/file "):
                path = await asyncio.to_thread(
                    lambda: Path(text.removeprefix("/file ").strip()).expanduser())
                accepted = await (send_file(self.secure, args.group, path, kind="group")
                                  if args.group else send_file(self.secure, args.to, path))
                print(f"sent {path.name} as message {accepted.message_id}", flush=True)
            elif args.group:
                await self.secure.send_group_text(args.group, text)
            else:
                await self.secure.send_text(args.to, text)
        finally:
            self.warn_key_changes()

    async def command(self, line: str) -> None:
        name, _, user = line.partition(" ")
        user = user.strip()
        if name not in ("/verify", "/trust") or not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", user):
            print("commands: /file PATH, /verify USER, /trust USER", file=sys.stderr)
            return
        if name == "/verify":
            number = await self.secure.safety_number(user)
            print(f"safety number with {user}: {number}\n(the same on {user}'s screen: "
                  f"/trust {user})", flush=True)
        else:
            await self.secure.refresh([user])
            self.secure.machine.set_verified(user)
            self.secure.machine.save()
            print(f"{user}'s devices are verified", flush=True)
        self.warn_key_changes()

    async def receive(self) -> None:
        while True:
            try:
                result = await self.secure.next_message(timeout=3600)
            except (TimeoutError, E2eeError) as exc:  # keep listening: the next one may work
                if isinstance(exc, E2eeError):
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                continue
            if isinstance(result, Decrypted) and (body := file_body(result.text)) is not None:
                await self._save(result, body)
            else:
                _print_result(result)
            self.warn_key_changes()

    async def _save(self, message: Decrypted, body: FileBody) -> None:
        where = f"[{message.conversation} #{message.seq}] {message.sender}: file {body.name!r}"
        try:
            saved = await download(self.client, body, self.files_dir)
        except AttachmentError as exc:
            print(f"{where} not saved: {exc}", file=sys.stderr, flush=True)
            return
        print(f"{where} ({body.size} bytes) saved as {saved}", flush=True)


def _client(args: argparse.Namespace, creds: Credentials) -> CourierClient:
    """The device's client: its socket through the balancer when one is given (which it
    goes back through when the socket is moved or lost), REST on ``--url``."""
    return CourierClient(args.url, creds, balancer=args.balancer)


async def _open(args: argparse.Namespace, client: CourierClient) -> _Session:
    secure = SecureClient(client, machine_for(args.url, client.credentials))
    await secure.publish_keys()
    return _Session(client, secure, getattr(args, "files_dir", Path("courier-files")))


async def _chat(args: argparse.Namespace) -> None:
    async with _client(args, await _cli_credentials(args)) as client:
        session = await _open(args, client)
        synced = await client.sync()
        creds = client.credentials
        print(f"connected as {creds.user}/{creds.device}; {synced.count} waiting; messages "
              "are end-to-end encrypted", flush=True)
        receiver = asyncio.create_task(session.receive())
        loop = asyncio.get_running_loop()
        try:
            while (line := await loop.run_in_executor(None, sys.stdin.readline)):
                text = line.rstrip("\n")
                if not text.strip():
                    continue
                try:
                    if text.startswith("/"):
                        await session.command(text)
                    else:
                        await session.send(args, text)
                except (ClientError, E2eeError, AttachmentError, OSError) as exc:
                    print(f"refused: {exc}", file=sys.stderr)
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)


async def _send(args: argparse.Namespace) -> None:
    async with _client(args, await _cli_credentials(args)) as client:
        session = await _open(args, client)
        accepted = await (session.secure.send_group_text(args.group, args.text) if args.group
                          else session.secure.send_text(args.to, args.text))
        session.warn_key_changes()
        print(msgspec.json.encode(accepted).decode())


async def _listen(args: argparse.Namespace) -> None:
    async with _client(args, await _cli_credentials(args)) as client:
        session = await _open(args, client)
        await client.sync()
        await session.receive()


async def _register(args: argparse.Namespace) -> None:
    creds = await register_device(args.url, args.user, args.device)
    print(msgspec.json.encode(creds).decode())


def _label(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,32}", value):
        raise argparse.ArgumentTypeError("1-32 of A-Z a-z 0-9 _ -")
    return value


def _id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", value):
        raise argparse.ArgumentTypeError("1-64 of A-Z a-z 0-9 _ -")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080",
                        help="gateway base URL (registration and REST; the socket too, "
                             "unless --balancer is given)")
    parser.add_argument("--balancer", metavar="URL",
                        help="balancer base URL: open the socket on the gateway it chooses, "
                             "and come back through it when the socket is moved or lost")
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser("register", help="register a device")
    register.add_argument("--user", required=True)
    register.add_argument("--device")
    for name in ("chat", "send", "listen"):
        command = commands.add_parser(name)
        command.add_argument("--user", required=True)
        device = command.add_mutually_exclusive_group()
        device.add_argument("--fresh", action="store_true",
                            help="use a new, uncached device (the cached one is left as is)")
        device.add_argument("--device", type=_label, metavar="LABEL",
                            help="use the cached device LABEL of this user (registered on "
                                 "first use), e.g. a second device")
        if name != "listen":
            target = command.add_mutually_exclusive_group(required=True)
            target.add_argument("--to", type=_id, help="recipient user id")
            target.add_argument("--group", type=_id, help="recipient group id")
        if name != "send":
            command.add_argument("--files-dir", type=Path, default=Path("courier-files"),
                                 help="where received files are saved (default: "
                                      "./courier-files)")
    commands.choices["send"].add_argument("text")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        parser.error("--url must start with http:// or https://")
    if args.balancer is not None and not args.balancer.startswith(("http://", "https://")):
        parser.error("--balancer must start with http:// or https://")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = {"register": _register, "chat": _chat, "send": _send, "listen": _listen}
    try:
        asyncio.run(handler[args.command](args))
    except KeyboardInterrupt:
        return 0
    except (ClientError, BalancerError, E2eeError, RuntimeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
