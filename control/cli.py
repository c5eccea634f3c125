"""``python -m control``: operator commands against a gateway's admin API.

  dead-letters list [--after S] [--limit N]   page the dead letters, oldest first
  dead-letters show SEQ                       one dead letter: headers and envelope (base64)
  dead-letters replay SEQ                     republish it to its original subject, delete it
  dead-letters delete SEQ                     drop it

The admin secret comes from ``--secret`` or the ``COURIER_AUTH_ADMIN_SECRET`` environment
variable (the gateway's own setting). Replies are printed as JSON on stdout. Exit status: 0 on
success, 1 when the gateway refused or could not be reached (the problem on stderr), 2 for
bad arguments.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from schemas.bounds import MAX_INT
from schemas.dead_letters import MAX_PAGE

SECRET_ENV = "COURIER_AUTH_ADMIN_SECRET"
PATH = "/v1/admin/dead-letters"
TIMEOUT_S = 30.0


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not within [{low}, {high}]")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m control", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="gateway base URL")
    parser.add_argument("--secret", help=f"admin secret (default: ${SECRET_ENV})")
    commands = parser.add_subparsers(dest="command", required=True)
    letters = commands.add_parser("dead-letters", help="list, show, replay, delete")
    actions = letters.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="page the dead letters, oldest first")
    listing.add_argument("--after", type=_bounded(0, MAX_INT), default=0,
                         help="start after this position")
    listing.add_argument("--limit", type=_bounded(1, MAX_PAGE), default=50,
                         help=f"page size (1-{MAX_PAGE})")
    for name in ("show", "replay", "delete"):
        actions.add_parser(name).add_argument("seq", type=_bounded(1, MAX_INT),
                                              help="the dead letter's position")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        parser.error("--url must start with http:// or https://")
    args.secret = args.secret or os.environ.get(SECRET_ENV, "")
    if not args.secret:
        parser.error(f"the admin secret is needed: --secret or ${SECRET_ENV}")
    return args


def _route(args: argparse.Namespace) -> tuple[str, str]:
    """The method and path of the command."""
    if args.action == "list":
        return "GET", f"{PATH}?after={args.after}&limit={args.limit}"
    method = {"show": "GET", "replay": "POST", "delete": "DELETE"}[args.action]
    return method, f"{PATH}/{args.seq}" + ("/replay" if args.action == "replay" else "")


def _request(args: argparse.Namespace) -> tuple[int, Any]:
    method, path = _route(args)
    request = urllib.request.Request(args.url.rstrip("/") + path, method=method,
                                     headers={"Authorization": f"Bearer {args.secret}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"detail": raw.decode(errors="replace")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        status, body = _request(args)
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if status >= 400:
        code = body.get("code", status) if isinstance(body, dict) else status
        detail = body.get("detail", "") if isinstance(body, dict) else ""
        print(f"error: {code}: {detail}", file=sys.stderr)
        return 1
    print(json.dumps(body if body is not None else {"deleted": args.seq}, indent=2))
    return 0
