"""``make chaos`` in miniature, through the same code: a router SIGKILL under a few seconds of
traffic loses nothing and shows nothing twice, so the suite cannot rot unnoticed."""

from pathlib import Path

from chaos.faults import FAULTS, Timing
from chaos.run import Settings, run_fault


async def test_router_kill_loses_nothing(tmp_path: Path) -> None:
    settings = Settings(rate_per_s=20, duration_s=4, senders=2, settle_s=60,
                        timing=Timing(restart_delay_s=0.5))
    result = await run_fault(FAULTS["router-kill"], settings, tmp_path / "router-kill")
    tally = result.tally
    assert tally.accepted >= 20, result  # traffic flowed before, during and after the fault
    assert tally.expected == 2 * tally.accepted  # an online and an offline device each
    assert (tally.lost, tally.duplicates, tally.unanswered) == (0, 0, 0), result
    assert tally.delivered == tally.expected
    assert tally.recovery_s is not None and tally.recovery_s >= 0.5, result  # router was down
    assert result.clean and result.logs is None
    assert not (tmp_path / "router-kill").exists()  # a clean fault leaves nothing behind
