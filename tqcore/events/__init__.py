"""Events: sending them (dispatcher) and folding them into cluster state."""
