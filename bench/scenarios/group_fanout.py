"""group-fanout: one group of online members (100 by default, one device each).

A few members (10) send to the group (``to: group``) in a closed loop, a window of 4 sends
each, for 15 s; every other member's device gets each message. Measures deliveries per second
(``delivered_per_s``, every device counted), send-to-receipt p50/p95/p99, and lost, duplicate
and out-of-order counts (order per conversation, by ``seq``). That is the saturated rate;
``group-paced`` (``bench.scenarios.group_paced``) runs the same group at a fixed offered rate
well below it, for the latency of a group that is not overloaded (``measure`` is shared).

The group is created with ``POST /v1/groups`` (``{"id", "members"}``, a member's bearer
token). While the system has no groups (that API answers 404/405, or a group send is refused
with ``unknown_recipient``) the scenario is reported as ``unavailable`` with the reason, and
the suite goes on.
"""

import time
from typing import Final

import aiohttp

from bench.client import WARMUP, Device, Handler, encode_body
from bench.scenario import Context, Outcome, drive_traffic, split, warmup_rx
from bench.stats import message_figures, rate_between, tally, timeline
from bench.system import mint_token
from bench.traffic import DeviceSpec, SenderSpec, TrafficPlan
from client.sdk import register_device
from schemas.errors import ErrorCode
from schemas.frames import Accepted, Destination, Error

NAME: Final = "group-fanout"
GROUP_ID: Final = "bench-group"
GROUP_API: Final = "/v1/groups"
PROBE_TIMEOUT_S: Final = 10.0


class _Reply(Handler):
    """Keeps the first reply to the probe send."""

    def __init__(self) -> None:
        self.reply: Accepted | Error | None = None

    def on_accepted(self, device: Device, frame: Accepted) -> None:
        self.reply = self.reply or frame

    def on_error(self, device: Device, frame: Error) -> None:
        self.reply = self.reply or frame


async def run(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    return await measure(ctx, rate_per_s=None, window=sizes.group_window,
                         duration_s=sizes.group_s)


async def measure(ctx: Context, *, rate_per_s: float | None, window: int | None,
                  duration_s: float) -> Outcome:
    """The group's load: ``ctx.sizes.group_senders`` senders, each with ``window`` sends
    awaiting ``accepted`` (None: unbounded), sending ``rate_per_s`` messages per second
    together, spread evenly over them (None: as fast as the window allows), for
    ``duration_s``."""
    sizes = ctx.sizes
    members = [DeviceSpec(i, f"g{i}", f"g{i}-d") for i in range(sizes.group_members)]
    for spec in members:
        await register_device(ctx.system.http_url, spec.user, spec.device)
    reason = await _create_group(ctx, members) or await _probe(ctx, members[0])
    if reason is not None:
        return Outcome(unavailable_figures(), status="unavailable", reason=reason)
    recipients = {s.index: [m.index for m in members if m.index != s.index]
                  for s in members[:sizes.group_senders]}
    plans = []
    for share in (share for share in split(members, ctx.workers) if share):
        devices = tuple(share)
        senders = tuple(SenderSpec(d.index, "group", GROUP_ID) for d in devices
                        if d.index in recipients)
        plans.append(TrafficPlan(
            ws_url=ctx.system.ws_url, secret=ctx.system.secret, devices=devices,
            senders=senders,
            rate_per_s=None if rate_per_s is None else rate_per_s * len(senders) / len(
                recipients),
            window=window, duration_s=duration_s,
            expected_warmup_rx=warmup_rx(devices, recipients, 1)))
    load = await drive_traffic(ctx, plans, recipients)
    counts = tally(load.reports, recipients)
    figures = message_figures(counts, rate_between(counts.recv_ns, load.start_ns, load.end_ns))
    figures.update(members=sizes.group_members, senders=sizes.group_senders,
                   window=window, duration_s=duration_s, offered_per_s=rate_per_s)
    return Outcome(figures, latencies_ms=counts.latencies_ms,
                   timeline=timeline(counts.recv_ns, load.start_ns, sizes.bin_s))


def unavailable_figures() -> dict[str, None]:
    return dict.fromkeys(("p50_ms", "p95_ms", "p99_ms", "delivered_per_s", "sent", "delivered",
                          "lost", "duplicates", "out_of_order"))


async def _create_group(ctx: Context, members: list[DeviceSpec]) -> str | None:
    """Create the group; the reason it is unavailable if the system has no group API."""
    owner = members[0]
    token = mint_token(ctx.system.secret, owner.user, owner.device)
    async with aiohttp.ClientSession() as session, session.post(
        f"{ctx.system.http_url}{GROUP_API}",
        json={"id": GROUP_ID, "members": [m.user for m in members]},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        body = await response.text()
        if response.status in (404, 405):
            return f"no group API: POST {GROUP_API} answered {response.status}"
        if response.status >= 300:
            raise RuntimeError(f"creating the group failed ({response.status}): {body[:300]}")
    return None


async def _probe(ctx: Context, member: DeviceSpec) -> str | None:
    """Send one message to the group; the reason if the system refuses group sends."""
    handler = _Reply()
    device = Device(member.index, member.user, member.device, handler, ack=False)
    async with aiohttp.ClientSession() as session:
        await device.connect(session, ctx.system.ws_url,
                             mint_token(ctx.system.secret, member.user, member.device))
        try:
            await device.send(Destination(kind="group", id=GROUP_ID),
                              encode_body(WARMUP, member.index, 0, time.monotonic_ns()),
                              "probe")
            await device.drained(PROBE_TIMEOUT_S)
        finally:
            await device.close()
    if isinstance(handler.reply, Error):
        if handler.reply.code == ErrorCode.UNKNOWN_RECIPIENT:
            return f"group sends are refused: {handler.reply.code}: {handler.reply.message}"
        raise RuntimeError(f"the group probe failed: {handler.reply.code}: "
                           f"{handler.reply.message}")
    return None
