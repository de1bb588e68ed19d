"""Client construction details: the Kraken v2 book checksum input computed from integer ticks
equals the documented string method (format with the market precision, drop '.', strip
leading zeros); clients share SSL contexts."""

from __future__ import annotations

import binascii
import ssl
from pathlib import Path
from typing import Any

import certifi
from hypothesis import given
from hypothesis import strategies as st

from exporter.feeds.clients import build_exchange
from exporter.feeds.integrity import kraken_checksum, kraken_checksum_payload


def documented(asks: list[list[float]], bids: list[list[float]], pd: int, qd: int) -> str:
    def field(x: float, d: int) -> str:
        return f"{x:.{d}f}".replace(".", "").lstrip("0")

    return "".join(field(p, pd) + field(q, qd) for side in (asks, bids) for p, q in side[:10])


def test_documented_example_level() -> None:
    # docs.kraken.com book checksum v2: price "45285.2", qty "0.00100000" -> "452852100000"
    assert kraken_checksum_payload([[45285.2, 0.001]], [], 1, 8) == "452852100000"


@st.composite
def book(draw: st.DrawFn) -> tuple[list[list[float]], list[list[float]], int, int]:
    pd, qd = draw(st.integers(0, 8)), draw(st.integers(0, 8))
    ticks = st.integers(1, 10**13 // 10**pd * 10**pd)  # up to 1e13 units: below float's 2**53
    lots = st.integers(1, 10**12)

    def side() -> list[list[float]]:
        n = draw(st.integers(0, 15))
        return [[float(f"{draw(ticks) / 10**pd:.{pd}f}"), draw(lots) / 10**qd] for _ in range(n)]

    return side(), side(), pd, qd


@given(book())
def test_integer_ticks_equal_the_documented_string_method(
    b: tuple[list[list[float]], list[list[float]], int, int],
) -> None:
    asks, bids, pd, qd = b
    assert kraken_checksum_payload(asks, bids, pd, qd) == documented(asks, bids, pd, qd)
    expected = binascii.crc32(documented(asks, bids, pd, qd).encode())
    assert kraken_checksum(asks, bids, pd, qd) == expected


def test_clients_share_one_ssl_context_per_trust_store(tmp_path: Path) -> None:
    """ccxt would parse the CA bundle into a new context on every reconnect."""

    def client(exchange: str, **config: Any) -> Any:
        return build_exchange(exchange, config, on_frame=lambda: None, on_malformed=print)

    a, b, c = client("binance"), client("kraken"), client("binance")
    assert isinstance(a.ssl_context, ssl.SSLContext)
    assert a.ssl_context is b.ssl_context is c.ssl_context
    assert a.ssl_context.verify_mode is ssl.CERT_REQUIRED and a.ssl_context.check_hostname
    assert client("binance", verify=False).ssl_context in (None, False)  # left to ccxt
    bundle = tmp_path / "ca.pem"
    bundle.write_text(Path(certifi.where()).read_text())
    own = client("binance", cafile=str(bundle)).ssl_context
    assert isinstance(own, ssl.SSLContext) and own is not a.ssl_context
