"""Layer 2: the one stacking engine (mean/median/sum, clipping, weights, scaling, memory-bounded bands) and its file-level driver."""
