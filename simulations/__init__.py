"""Real-dataset adapters, scenarios and the `simulate` runner."""
