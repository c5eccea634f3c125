"""How big each scenario is: the standard suite (``make bench``, under 10 minutes on the
2-core machine) and the smoke sizes (``--quick``: seconds, for ``make test``)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """Every size knob of the suite, in one table."""

    #: direct-latency and floor-nats: offered messages per second and how long.
    rate_per_s: float
    latency_s: float
    #: direct-latency and direct-throughput: sender -> recipient pairs, one device each.
    pairs: int
    #: direct-throughput and floor-nats' max rate: closed-loop duration and window.
    throughput_s: float
    throughput_window: int
    floor_max_s: float
    floor_max_window: int
    #: group-fanout: members (one device each), how many of them send, window, duration.
    group_members: int
    group_senders: int
    group_window: int
    group_s: float
    #: group-paced: the same group at this offered rate (messages per second, all senders
    #: together) for this long.
    group_paced_rate_per_s: float
    group_paced_s: float
    #: offline-catchup: messages that arrive while the device is offline, from how many senders.
    catchup_messages: int
    catchup_senders: int
    #: connections: idle sockets on one gateway, and the CPU window (None: 1.25 heartbeats).
    connections: int
    idle_window_s: float | None
    #: media: file sizes in MB (10^6 bytes) and transfers of each per path.
    media_sizes_mb: tuple[int, ...]
    media_rounds: int
    #: partition-scaling: (storage workers, partitions) configurations, each measured with
    #: direct-throughput's closed loop for ``partition_s`` after ``partition_idle_s`` idle.
    partition_matrix: tuple[tuple[int, int], ...]
    partition_s: float
    partition_idle_s: float
    #: history: messages in the conversation (half of them archived), pages read per side.
    history_messages: int
    history_pages: int
    #: Throughput-over-time bins.
    bin_s: float


STANDARD = Sizes(
    rate_per_s=1000, latency_s=30, pairs=200,
    throughput_s=20, throughput_window=4, floor_max_s=10, floor_max_window=256,
    group_members=100, group_senders=10, group_window=4, group_s=15,
    group_paced_rate_per_s=50, group_paced_s=15,
    catchup_messages=10_000, catchup_senders=50,
    connections=20_000, idle_window_s=None,
    media_sizes_mb=(1, 20), media_rounds=10,
    partition_matrix=((1, 1), (1, 4), (1, 16), (2, 1), (2, 4), (2, 16)),
    partition_s=15, partition_idle_s=8,
    history_messages=2000, history_pages=200,
    bin_s=1.0,
)

SMOKE = Sizes(
    rate_per_s=100, latency_s=1, pairs=4,
    throughput_s=1, throughput_window=2, floor_max_s=1, floor_max_window=16,
    group_members=5, group_senders=2, group_window=2, group_s=1,
    group_paced_rate_per_s=20, group_paced_s=1,
    catchup_messages=100, catchup_senders=4,
    connections=50, idle_window_s=1.0,
    media_sizes_mb=(1, 2), media_rounds=2,
    partition_matrix=((2, 1), (2, 4)), partition_s=1, partition_idle_s=0.5,
    history_messages=240, history_pages=10,
    bin_s=0.25,
)
