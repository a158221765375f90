"""Measuring renders part by part: the few-shot segmenter on the generator's features
(`features`, `segmenter`, `segmenter_training`, user masks in `masks`), per-part metrics
and their changes (`parts`), and the quantification of a whole tuning sweep (`quantify`)."""
