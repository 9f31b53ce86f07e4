"""Top layer: the `radsynth` command line, pipeline stages and releases.

Kept free of heavy imports: `python -m pipelines.bootstrap` runs with a bare interpreter."""
