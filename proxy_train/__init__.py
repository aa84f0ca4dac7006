"""Token stores, mixture schedules, the sampler and the proxy trainer (JAX stack and numpy only)."""
