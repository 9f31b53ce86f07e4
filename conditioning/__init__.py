"""Conditions: the dataset format that declares them (`conditioning.dataset`) and the encoders
that turn requested conditions into model inputs. Sits under `generation/`."""
