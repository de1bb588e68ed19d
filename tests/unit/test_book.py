"""Hand-computed checks of exporter.analytics.book.book_metrics."""

from __future__ import annotations

import pytest

from exporter.analytics.book import book_metrics
from exporter.model import BookSnapshot, Level

BANDS = (0.001, 0.005, 0.01)

# mid = (99.95 + 100.05) / 2 = 100; band edges: 0.1% -> 99.9 / 100.1, 0.5% -> 99.5 / 100.5,
# 1% -> 99 / 101. No level lies on an edge (float edges are not exact decimals).
BIDS: tuple[Level, ...] = ((99.95, 1.0), (99.6, 2.0), (99.2, 3.0), (98.5, 10.0))
ASKS: tuple[Level, ...] = ((100.05, 1.0), (100.4, 2.0), (100.8, 4.0), (101.3, 1.0))


def snap(bids: tuple[Level, ...], asks: tuple[Level, ...]) -> BookSnapshot:
    return BookSnapshot(
        exchange="binance",
        symbol="BTC/USD",
        market="BTC/USDT",
        bids=bids,
        asks=asks,
        exchange_ts=None,
        received_at=1.0,
        received_mono=1.0,
    )


def test_mid_spread_depth_imbalance() -> None:
    m = book_metrics(snap(BIDS, ASKS), 1.0, BANDS)
    assert m is not None
    assert m.best_bid == 99.95
    assert m.best_ask == 100.05
    assert m.mid == pytest.approx(100.0)
    # spread = (100.05 - 99.95) / 100 = 0.001
    assert m.spread_ratio == pytest.approx(0.001)
    # 0.1%: bids >= 99.9 -> 99.95*1 = 99.95; asks <= 100.1 -> 100.05*1 = 100.05
    # 0.5%: bids >= 99.5 -> 99.95 + 99.6*2 = 299.15; asks <= 100.5 -> 100.05 + 100.4*2 = 300.85
    # 1%:   bids >= 99   -> 299.15 + 99.2*3 = 596.75; asks <= 101 -> 300.85 + 100.8*4 = 704.05
    expected = {0.001: (99.95, 100.05), 0.005: (299.15, 300.85), 0.01: (596.75, 704.05)}
    assert set(m.depth) == set(BANDS)
    for band, (bd, ad) in expected.items():
        assert m.depth[band][0] == pytest.approx(bd)
        assert m.depth[band][1] == pytest.approx(ad)
    # imbalance = (bid - ask) / (bid + ask)
    assert m.imbalance[0.001] == pytest.approx(-0.1 / 200.0)  # -0.0005
    assert m.imbalance[0.005] == pytest.approx(-1.7 / 600.0)
    assert m.imbalance[0.01] == pytest.approx((596.75 - 704.05) / (596.75 + 704.05))
    # last bid 98.5 <= 99 and last ask 101.3 >= 101: every band complete
    assert m.depth_complete == {0.001: True, 0.005: True, 0.01: True}
    assert m.quote_rate == 1.0


def test_conversion_rate_applies_to_depth_only() -> None:
    # USDT market, 1 USDT = 0.999 USD: depth scaled by 0.999, prices stay in USDT
    m = book_metrics(snap(BIDS, ASKS), 0.999, BANDS)
    assert m is not None
    assert m.best_bid == 99.95 and m.best_ask == 100.05
    assert m.mid == pytest.approx(100.0)
    assert m.depth[0.005][0] == pytest.approx(299.15 * 0.999)
    assert m.depth[0.01][1] == pytest.approx(704.05 * 0.999)
    # imbalance is unit-free: unchanged by the rate
    assert m.imbalance[0.01] == pytest.approx((596.75 - 704.05) / (596.75 + 704.05))
    assert m.quote_rate == 0.999


def test_incomplete_when_copied_levels_end_inside_band() -> None:
    # bids copied down to 99.2: the 1% edge (99) lies beyond -> incomplete; 0.5% edge (99.5)
    # is passed (99.2 < 99.5) -> complete. Asks copied up to 100.4: the 0.5% edge (100.5)
    # and the 1% edge (101) lie beyond -> incomplete; 0.1% (100.1) complete.
    m = book_metrics(snap(BIDS[:3], ASKS[:2]), 1.0, BANDS)
    assert m is not None
    assert m.depth_complete == {0.001: True, 0.005: False, 0.01: False}
    # depth is still the sum of what was copied
    assert m.depth[0.01][0] == pytest.approx(596.75)
    assert m.depth[0.01][1] == pytest.approx(300.85)


def test_last_level_exactly_on_edge_is_inside_and_complete() -> None:
    # binary-exact numbers: mid = 128, band 1/16 -> bid edge 120, ask edge 136 (exact floats).
    # The edge level is in the band (price >= edge); every uncopied bid is < 120, so the band
    # is complete although the last copied level sits on the edge.
    m = book_metrics(
        snap(((127.0, 1.0), (120.0, 1.0)), ((129.0, 1.0), (136.0, 1.0))), 1.0, [0.0625]
    )
    assert m is not None
    assert m.mid == 128.0
    assert m.depth[0.0625] == (127.0 + 120.0, 129.0 + 136.0)
    assert m.depth_complete[0.0625] is True
    # just inside the edge on the last copied level -> incomplete
    m2 = book_metrics(
        snap(((127.0, 1.0), (120.5, 1.0)), ((129.0, 1.0), (136.0, 1.0))), 1.0, [0.0625]
    )
    assert m2 is not None
    assert m2.depth_complete[0.0625] is False


def test_empty_band_has_no_imbalance() -> None:
    # mid 100, band 0.1% = [99.9, 100.1] holds no level: depth 0/0, no imbalance entry
    m = book_metrics(snap(((90.0, 1.0),), ((110.0, 2.0),)), 1.0, [0.001, 0.2])
    assert m is not None
    assert m.spread_ratio == pytest.approx(0.2)
    assert m.depth[0.001] == (0.0, 0.0)
    assert 0.001 not in m.imbalance
    assert m.depth_complete[0.001] is True  # 90 <= 99.9 and 110 >= 100.1
    # 20% band = [80, 120]: 90 bid, 220 ask -> imbalance (90 - 220) / 310
    assert m.depth[0.2] == (90.0, 220.0)
    assert m.imbalance[0.2] == pytest.approx(-130.0 / 310.0)


def test_band_order_does_not_matter() -> None:
    a = book_metrics(snap(BIDS, ASKS), 1.0, [0.01, 0.001, 0.005])
    b = book_metrics(snap(BIDS, ASKS), 1.0, BANDS)
    assert a is not None and b is not None
    assert a.depth == b.depth
    assert a.depth_complete == b.depth_complete
    assert a.imbalance == b.imbalance


def test_empty_side_gives_none() -> None:
    assert book_metrics(snap((), ASKS), 1.0, BANDS) is None
    assert book_metrics(snap(BIDS, ()), 1.0, BANDS) is None


def test_no_bands() -> None:
    m = book_metrics(snap(BIDS, ASKS), 1.0, [])
    assert m is not None
    assert m.depth == {} and m.depth_complete == {} and m.imbalance == {}
