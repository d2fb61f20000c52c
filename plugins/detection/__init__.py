"""Object-detection papers."""
