"""Every figure of the pipeline. Figure code reads results and computes nothing new; all
figures are saved through `figures.save_figure` (atomic, byte-stable PNG)."""
