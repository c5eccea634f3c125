"""The CLI encrypts: ``send`` to a ``listen``ing user arrives decrypted, the server stores no
plaintext, and ``chat``'s ``/verify`` prints the same safety number on both sides."""

import asyncio
import os
import sys
from pathlib import Path

from tests.e2e.social_helpers import call, wait_for
from tests.harness import System


def cli_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home)}


async def run_cli(system: System, home: Path, *args: str, stdin: bytes = b"") -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "--url", system.url, *args, env=cli_env(home),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_cli_send_and_listen_are_end_to_end_encrypted(system: System,
                                                            tmp_path: Path) -> None:
    home = tmp_path / "home"
    listener = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "--url", system.url, "listen", "--user", "bob",
        env=cli_env(home), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    watcher = await system.connect(await system.device("watcher", "watcher-1"))
    try:
        async def bob_has_keys() -> bool:
            reply = await call(watcher, "POST", "/v1/keys/query", {"users": ["bob"]})
            return "bob" in reply["devices"]

        await wait_for(bob_has_keys, 30)
        accepted = await run_cli(system, home, "send", "--user", "alice", "--to", "bob",
                                 "top secret words")
        assert '"message_id"' in accepted
        assert listener.stdout is not None
        line = await asyncio.wait_for(listener.stdout.readline(), 30)
        assert line.decode().rstrip().endswith("alice: top secret words"), (
            line, listener.stderr and await listener.stderr.read())
        assert b"top secret words" not in (system.root / "courier.db").read_bytes()
        mine = await run_cli(system, home, "chat", "--user", "alice", "--to", "bob",
                             stdin=b"/verify bob\n/nonsense\n")
        theirs = await run_cli(system, home, "chat", "--user", "bob", "--fresh", "--to",
                               "alice", stdin=b"/verify alice\n")
        number = mine.split("safety number with bob: ", 1)[1].split("\n", 1)[0]
        assert len(number.replace(" ", "")) == 60
        # bob's --fresh device is one more device of bob: the number changed for both ...
        assert theirs.split("safety number with alice: ", 1)[1].split("\n", 1)[0] != number
        again = await run_cli(system, home, "chat", "--user", "alice", "--to", "bob",
                              stdin=b"/verify bob\n")
        assert theirs.split("with alice: ")[1][:71] == again.split("with bob: ")[1][:71]
    finally:
        if listener.returncode is None:
            listener.kill()
        await listener.wait()
        await watcher.close()
