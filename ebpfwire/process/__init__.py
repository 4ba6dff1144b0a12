"""Who did it: the process table followed through events, /proc snapshots and containers,
the answers attached to each event (the enricher), and the process tree of a capture."""
