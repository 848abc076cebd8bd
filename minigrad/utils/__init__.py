"""Tools around training: activation checkpointing (`checkpoint`) and the cost accounting (`flops`)."""
