"""Recorded books: the Tardis ``incremental_book_L2`` file format and the live recorder."""
