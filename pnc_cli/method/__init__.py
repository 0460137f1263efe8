"""Layer method: Partial Network Cloning on tensors (pure torch; docs/method-spec.md). Never imports io."""
