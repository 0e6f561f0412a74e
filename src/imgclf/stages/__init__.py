"""The pipeline's stages, one module each, named as in dvc.yaml: each turns its params section
and its inputs into its outputs through the library packages."""
