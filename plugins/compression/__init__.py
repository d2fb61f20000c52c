"""Model-compression papers: methods that transform a built model."""
