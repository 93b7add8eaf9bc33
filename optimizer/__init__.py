"""The optimizer: per-model service objectives now; the trace-driven control loop later."""
