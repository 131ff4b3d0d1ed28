"""localize package."""
