"""The local executor: `scalelab run` on one machine, one trainer process per process count."""
