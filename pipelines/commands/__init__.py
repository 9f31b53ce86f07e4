"""One module per `radsynth` sub-command; each exposes `register(subparsers)`."""
