"""The school side: the family table, the model, DP training and local evaluation."""
