"""The drill's checker must itself catch what it claims to: duplicates, gaps, bad sequences."""

from __future__ import annotations

from tests.chaos.bfxclient import SEQ_ALL, BfxCounter


def _bot(flags: int = SEQ_ALL) -> BfxCounter:
    bot = BfxCounter("ws://unused", (("trades", "tBTCUSD"),), flags=flags, name="t")
    bot.on_frame('{"event":"subscribed","channel":"trades","chanId":5,"symbol":"tBTCUSD"}')
    return bot


def test_clean_stream_with_announced_gap_passes() -> None:
    bot = _bot()
    for frame in (
        "[5,[[12,1,1,1],[11,1,1,1]],1]",
        '[5,"te",[13,1,1,1],2]',
        '[5,"tu",[13,1,1,1],3]',
        '[5,"hb",4]',
        "[5,[[20,1,1,1],[19,1,1,1]],5]",  # a fresh snapshot announces the jump to 21
        '[5,"te",[21,1,1,1],6]',
    ):
        bot.on_frame(frame)
    assert bot.violations == []
    assert (bot.trades_seen(), bot.snapshots_seen(), bot.seq) == (2, 2, 6)


def test_duplicate_gap_and_sequence_errors_are_caught() -> None:
    bot = _bot()
    bot.on_frame('[5,"te",[1,1,1,1],1]')  # before any snapshot
    bot.on_frame("[5,[[12,1,1,1]],2]")
    bot.on_frame('[5,"te",[12,1,1,1],3]')  # duplicate of the snapshot's newest
    bot.on_frame('[5,"te",[15,1,1,1],5]')  # silent gap, and seq skipped 4
    bot.on_frame('[5,"te",[16,1,1,1],5]')  # seq repeated
    bot.on_frame('[9,"hb",6]')  # unknown channel
    text = "\n".join(bot.violations)
    assert "before any snapshot" in text
    assert "duplicate trade 12" in text
    assert "unannounced gap" in text
    assert "seq 5 after 3" in text and "seq 5 after 5" in text
    assert "unknown channel 9" in text


def test_without_flags_no_sequence_is_expected() -> None:
    bot = _bot(flags=0)
    bot.on_frame("[5,[[12,1,1,1]]]")
    bot.on_frame('[5,"te",[13,1,1,1]]')
    assert bot.violations == [] and bot.seq == 0
