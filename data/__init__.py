"""Data layer: annotation loaders, the segment table, video reading, the synthetic set."""
