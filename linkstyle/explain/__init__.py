"""Explanations through the link: setting one unit of R at a time and rendering (`tuning`),
through the link (open loop) or solved through the generator and classifier (`closed_loop`),
how faithfully the renders carry the set unit and which units they cannot move
(`faithfulness`), and each mode's unit labels side by side (`mode_labels`); what R is invariant to,
from samples of w given r through the INN link (`invariances`); the test seeds they all
start from (`seeds`); counterfactuals, shifts of r that flip the render's class, batched over
trajectories (`counterfactuals`), and what they changed in the image
(`counterfactual_changes`); FeatureVis's methods beside the link, scored on the generator's
part maps (`attribution`)."""
