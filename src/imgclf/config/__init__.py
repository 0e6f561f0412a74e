"""The params.yaml sections, one module per stage (`config.train` holds the `train:` section),
each with the view its stage reads (`TrainStageParams`: `seed` and `train`). `config.all` is the
whole file, for tools and tests; no stage reads it."""
