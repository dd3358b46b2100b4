"""Vector indices: what exists now (catalog); building, warming and advice come with the index issue."""
