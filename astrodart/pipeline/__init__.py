"""Layer 3: the Step engine, the ordered steps of a reduction, and the night runner of the command line."""
