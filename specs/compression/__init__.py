"""Model-compression specs."""
