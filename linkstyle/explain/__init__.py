"""Explanations through the link: setting one unit of R at a time and rendering (`tuning`);
FeatureVis's methods beside it, scored on the generator's part maps (`attribution`)."""
