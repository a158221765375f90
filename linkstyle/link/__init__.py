"""Linking R to W: paired samples (`pairs`), how alike the two spaces are (`similarity`),
the link kinds and their fits (`fit`, `linear`, `mlp`), links on disk (`store`), the
cross-checked loading of models + pairs + link (`bundle`), the cycle test (`cycle`), and the
INN link, a conditional density of w given r whose v = 0 is a link too (`inn`)."""
