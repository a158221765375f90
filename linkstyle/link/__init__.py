"""Linking R to W: paired samples (`pairs`), how alike the two spaces are (`similarity`),
the link kinds and their fits (`fit`, `linear`, `mlp`), links on disk (`store`), the
cross-checked loading of models + pairs + link (`bundle`), and the cycle test (`cycle`)."""
