"""Library adapters of the benchmark runner (one module per implementation)."""
