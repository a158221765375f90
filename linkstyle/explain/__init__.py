"""Explanations through the link: setting one unit of R at a time and rendering (`tuning`);
what R is invariant to, from samples of w given r through the INN link (`invariances`); the
test seeds both start from (`seeds`)."""
