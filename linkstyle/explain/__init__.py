"""Explanations through the link: setting one unit of R at a time and rendering (`tuning`);
counterfactuals, shifts of r that flip the render's class, batched over trajectories (`counterfactuals`),
and what they changed in the image (`counterfactual_changes`)."""
