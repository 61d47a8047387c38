"""The district side: aggregation of school metrics, the model registry and run reports."""
