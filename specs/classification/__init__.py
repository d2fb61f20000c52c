"""Image-classification specs."""
