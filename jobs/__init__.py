"""RQ jobs (settlement, sweeps, reconciliation) and the periodic schedule."""
