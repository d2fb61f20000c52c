"""Object-detection specs."""
