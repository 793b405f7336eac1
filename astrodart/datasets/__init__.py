"""Sample nights (locator, download, cache) and the one night simulator with known truth."""
