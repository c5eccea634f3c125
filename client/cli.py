"""``python -m client``: try Courier from a terminal.

  register --user alice              register a device, print its credentials as JSON
  chat --user alice --to bob         interactive: lines you type are sent, messages printed;
                                     "/file PATH" sends a file (encrypted, see attachments)
  send --user alice --to bob TEXT    send one message and print the server's acceptance
  listen --user bob                  print incoming messages until Ctrl-C

Devices are registered through the embedded-mode endpoint; credentials are cached per server
and user in ``~/.cache/courier-client`` (``--device LABEL`` keeps another cached device of the
same user; ``--fresh`` registers a one-off device and leaves the cache alone, so a terminal
already running as that user keeps its device). Bodies are sent as given: the CLI does not
encrypt (end-to-end encryption lives in the app); files are encrypted before upload
(``client.attachments``). Files received by ``chat`` and ``listen`` are saved in
``--files-dir`` (default ``./courier-files``).
"""

import argparse
import asyncio
import re
import sys
from pathlib import Path

import msgspec

from client.attachments import AttachmentError, download, file_body, send_file
from client.sdk import ClientError, CourierClient, Credentials, register_device
from schemas.frames import Message

CACHE = Path.home() / ".cache" / "courier-client"


def _print_message(message: Message) -> None:
    sender = message.sender.user or message.sender.service or "?"
    text = message.body.decode("utf-8", errors="replace")
    print(f"[{message.conversation} #{message.seq}] {sender}: {text}", flush=True)


def cache_path(url: str, user: str, label: str | None) -> Path:
    """Where the credentials of ``user``'s device ``label`` on the server at ``url`` live:
    tokens of one server are useless on another, so each server has its own folder."""
    server = re.sub(r"[^A-Za-z0-9]+", "_", url.split("://", 1)[-1]).strip("_")
    return CACHE / server / (f"{user}.json" if label is None else f"{user}.{label}.json")


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


async def _receive(client: CourierClient, files_dir: Path) -> None:
    async for message in client.messages():
        body = file_body(message)
        if body is None:
            _print_message(message)
            continue
        sender = message.sender.user or "?"
        try:
            saved = await download(client, message, files_dir)
        except AttachmentError as exc:
            print(f"[{message.conversation} #{message.seq}] {sender}: file {body.name!r} not "
                  f"saved: {exc}", file=sys.stderr, flush=True)
            continue
        print(f"[{message.conversation} #{message.seq}] {sender}: file {body.name!r} "
              f"({body.size} bytes) saved as {saved}", flush=True)


async def _send_line(client: CourierClient, to: str, line: str) -> None:
    """A line as a message, or ``/file PATH`` as an encrypted file."""
    if line.startswith("/file "):
        path = await asyncio.to_thread(
            lambda: Path(line.removeprefix("/file ").strip()).expanduser())
        accepted = await send_file(client, to, path)
        print(f"sent {path.name} as message {accepted.message_id}", flush=True)
        return
    await client.send(to, line.encode())


async def _chat(args: argparse.Namespace) -> None:
    creds = await _cli_credentials(args)
    async with CourierClient(args.url, creds) as client:
        synced = await client.sync()
        print(f"connected as {creds.user}/{creds.device}; {synced.count} waiting", flush=True)
        receiver = asyncio.create_task(_receive(client, args.files_dir))
        loop = asyncio.get_running_loop()
        try:
            while (line := await loop.run_in_executor(None, sys.stdin.readline)):
                if line.strip():
                    try:
                        await _send_line(client, args.to, line.rstrip("\n"))
                    except (ClientError, AttachmentError, OSError) as exc:
                        print(f"refused: {exc}", file=sys.stderr)
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)


async def _send(args: argparse.Namespace) -> None:
    creds = await _cli_credentials(args)
    async with CourierClient(args.url, creds) as client:
        accepted = await client.send(args.to, args.text.encode())
        print(msgspec.json.encode(accepted).decode())


async def _listen(args: argparse.Namespace) -> None:
    creds = await _cli_credentials(args)
    async with CourierClient(args.url, creds) as client:
        await client.sync()
        await _receive(client, args.files_dir)


async def _register(args: argparse.Namespace) -> None:
    creds = await register_device(args.url, args.user, args.device)
    print(msgspec.json.encode(creds).decode())


def _label(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,32}", value):
        raise argparse.ArgumentTypeError("1-32 of A-Z a-z 0-9 _ -")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="gateway base URL")
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
            command.add_argument("--to", required=True, help="recipient user id")
        if name != "send":
            command.add_argument("--files-dir", type=Path, default=Path("courier-files"),
                                 help="where received files are saved (default: "
                                      "./courier-files)")
    commands.choices["send"].add_argument("text")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        parser.error("--url must start with http:// or https://")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = {"register": _register, "chat": _chat, "send": _send, "listen": _listen}
    try:
        asyncio.run(handler[args.command](args))
    except KeyboardInterrupt:
        return 0
    except (ClientError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
