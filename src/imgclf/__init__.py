"""imgclf: a reproducible image classifier, from pictures on the web to a tested model."""
