"""Image-classification papers."""
