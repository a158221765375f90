"""Explanations through the link: setting one unit of R at a time and rendering (`tuning`)."""
