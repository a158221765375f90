"""The built-in world: 32 px procedural animals with per-pixel part labels and the factors
behind every image (`procedural`), rendered to HDF5 by stage `world` (`store`)."""
