"""Plumbing every stage shares and nothing method-specific: user errors, typed configs from
params.yaml, atomic file writes, chunked HDF5, checkpoints, devices and threads, image
conversions, and the stage shell (`cli.run`) that applies the one error policy."""
