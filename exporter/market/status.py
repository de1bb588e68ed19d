"""Book status: decided in one place, stored, and read against a deadline.

:class:`BookStatuses` holds the decided status of every watched book (conversion books
included) and, for a live one, the monotonic instant at which it turns stale without a new
update. :class:`~exporter.market.state.MarketState` decides (:meth:`BookStatuses.decide`) at
each update, feed event and sweep; every reader reads (:meth:`BookStatuses.read`), which is a
lookup and a comparison, never a recomputation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from exporter.config import Config
from exporter.feeds.stats import FeedStats
from exporter.model import BookSnapshot, BookStatus, ErrorReason, FeedKey

NEVER = math.inf


class BookStatuses:
    def __init__(self, config: Config, feeds: Mapping[FeedKey, FeedStats]) -> None:
        self._feeds = feeds
        self._status: dict[FeedKey, BookStatus] = {k: s.status for k, s in feeds.items()}
        self._deadline: dict[FeedKey, float] = dict.fromkeys(feeds, NEVER)
        self.stale_after = {k: config.stale_after(*k) for k in feeds}
        self._counted: set[FeedKey] = set()  # feeds counted stale, once per transition

    def read(self, feed: FeedKey, now: float) -> BookStatus:
        """The stored status; a live book past its deadline reads stale."""
        st = self._status[feed]
        if st is BookStatus.LIVE and now >= self._deadline[feed]:
            return BookStatus.STALE
        return st

    def live(self, feed: FeedKey, now: float) -> bool:
        return self._status[feed] is BookStatus.LIVE and now < self._deadline[feed]

    def decide(
        self, feed: FeedKey, snap: BookSnapshot | None, frozen: bool, now: float
    ) -> BookStatus:
        """The feed's own view, then: no book yet -> syncing; quiet past ``stale_after`` or
        ``frozen`` -> stale. Stored with the deadline of a live book."""
        st = self._feeds[feed].status
        deadline = NEVER
        if st is BookStatus.LIVE:
            if snap is None:
                st = BookStatus.SYNCING
            else:
                deadline = snap.received_mono + self.stale_after[feed]
                if now >= deadline or frozen:
                    st = BookStatus.STALE
        self._status[feed] = st
        self._deadline[feed] = deadline if st is BookStatus.LIVE else NEVER
        return st

    def count_stale(self, feed: FeedKey, status: BookStatus) -> None:
        """Count each live -> stale (or frozen) transition once, as
        ``cryptoarb_feed_errors_total{reason="stale"}``."""
        if status is BookStatus.STALE:
            if feed not in self._counted:
                self._feeds[feed].errors[ErrorReason.STALE] += 1
                self._counted.add(feed)
        else:
            self._counted.discard(feed)
