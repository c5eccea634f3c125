"""e2ee-cost: what end-to-end encryption costs the client, per message, beside the plain
figures of the other scenarios (the server's work does not change: it routes opaque bytes).

Measured in this process with ``client.crypto.OlmMachine`` and no network, on one core:

- 1:1: a sender encrypts each message with Olm for the peer's two devices and its own other
  device (three payloads, what ``SecureClient.send_text`` builds), and each recipient device
  decrypts its payload; a reply now and then moves the ratchet as a conversation does.
- group: the sender encrypts once with Megolm for a group of ``group_members`` member devices
  (the key share over Olm counted once, up front, as ``group_setup_ms``), and one member
  decrypts.

``p50_ms``/``p95_ms``/``p99_ms``: a 1:1 message's client-side cost (encrypt for every device +
one decrypt); ``olm_1to1_us`` and ``megolm_group_us``: mean microseconds per message,
encrypt plus one decryption; ``delivered_per_s``: 1:1 messages a single core encrypts and
decrypts per second.
"""

import time
from typing import Final

import numpy as np

from bench.scenario import Context, Outcome
from bench.stats import percentiles
from client.crypto.machine import Decrypted, OlmMachine
from schemas.frames import Destination, Message, Sender
from schemas.keys import ClaimedKey, DeviceKeys

NAME: Final = "e2ee-cost"
KEY: Final = bytes(32)
#: Messages per direction of each measurement, at standard and smoke sizes.
MESSAGES: Final = 2000
SMOKE_MESSAGES: Final = 50
REPLY_EVERY: Final = 10
TEXT: Final = "x" * 200


def _directory(machines: list[OlmMachine]) -> None:
    """Every machine learns every device (as a directory query would) and publishes."""
    entries: dict[str, list[DeviceKeys]] = {}
    for machine in machines:
        identity = machine.identity_keys()
        assert identity is not None
        entries.setdefault(machine.user, []).append(DeviceKeys(
            user=machine.user, device=machine.device, curve25519=identity.curve25519,
            ed25519=identity.ed25519, signature=identity.signature))
    for machine in machines:
        for user, devices in entries.items():
            machine.update_devices(user, devices)
    for machine in machines:
        machine.mark_published()


def _sessions(sender: OlmMachine, others: list[OlmMachine]) -> None:
    """``sender`` opens an Olm session with each of ``others`` (a claim of a one-time key)."""
    for other in others:
        key = other.new_one_time_keys(1)[0]
        sender.add_claimed_keys([ClaimedKey(user=other.user, device=other.device,
                                            key_id=key.key_id, key=key.key,
                                            signature=key.signature)])


def _frame(sender: OlmMachine, conversation: str, body: bytes, n: int) -> Message:
    return Message(message_id=f"m{n}", seq=n, conversation=conversation, kind="chat",
                   sender=Sender(user=sender.user, device=sender.device),
                   to=Destination(kind="user", id="bench"), app="default", module="chat",
                   body=body, ts=0, receipt=False)


def _direct(messages: int) -> list[float]:
    alice = OlmMachine.create("alice", "a1", KEY)
    alice2 = OlmMachine.create("alice", "a2", KEY)
    bob, bob2 = OlmMachine.create("bob", "b1", KEY), OlmMachine.create("bob", "b2", KEY)
    _directory([alice, alice2, bob, bob2])
    _sessions(alice, [bob, bob2, alice2])
    _sessions(bob, [alice])
    costs = []
    for n in range(messages):
        started = time.perf_counter()
        payloads = alice.encrypt_direct("d:alice:bob", ["bob", "alice"], TEXT)
        result = bob.decrypt(_frame(alice, "d:alice:bob", payloads["b1"], n))
        costs.append((time.perf_counter() - started) * 1000)
        assert isinstance(result, Decrypted)
        bob2.decrypt(_frame(alice, "d:alice:bob", payloads["b2"], n))
        alice2.decrypt(_frame(alice, "d:alice:bob", payloads["a2"], n))
        if n % REPLY_EVERY == 0:
            reply = bob.encrypt_direct("d:alice:bob", ["alice"], TEXT)["a1"]
            alice.decrypt(_frame(bob, "d:alice:bob", reply, 100_000 + n))
    return costs


def _group(members: int, messages: int) -> tuple[float, list[float]]:
    sender = OlmMachine.create("owner", "o1", KEY)
    others = [OlmMachine.create(f"m{i}", f"m{i}-d", KEY) for i in range(members - 1)]
    _directory([sender, *others])
    _sessions(sender, others)
    started = time.perf_counter()
    shares = sender.share_group_key("g:bench", [m.user for m in others])
    setup_ms = (time.perf_counter() - started) * 1000
    reader = others[0]
    reader.decrypt(_frame(sender, "g:bench", shares[reader.device], 0))
    costs = []
    for n in range(1, messages + 1):
        started = time.perf_counter()
        body = sender.encrypt_group("g:bench", TEXT)
        result = reader.decrypt(_frame(sender, "g:bench", body, n))
        costs.append((time.perf_counter() - started) * 1000)
        assert isinstance(result, Decrypted)
    return setup_ms, costs


async def run(ctx: Context) -> Outcome:
    messages = SMOKE_MESSAGES if ctx.sizes.pairs < 10 else MESSAGES
    started = time.perf_counter()
    direct = _direct(messages)
    elapsed = time.perf_counter() - started
    setup_ms, group = _group(ctx.sizes.group_members, messages)
    samples = np.array(direct)
    return Outcome(
        figures={**percentiles(samples), "sent": messages, "delivered": messages,
                 "lost": 0, "duplicates": 0, "out_of_order": 0,
                 "delivered_per_s": round(messages / elapsed, 1),
                 "olm_1to1_us": round(float(np.mean(direct)) * 1000, 1),
                 "megolm_group_us": round(float(np.mean(group)) * 1000, 1),
                 "group_members": ctx.sizes.group_members,
                 "group_setup_ms": round(setup_ms, 2)},
        latency_label="client-side encrypt + decrypt", latencies_ms=samples)
