"""What every stage shares: errors, output paths, atomic files, class lists, image decoding,
and reading params.yaml."""
