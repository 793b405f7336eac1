"""Layer 2: pure science functions (no file I/O, no printing)."""
