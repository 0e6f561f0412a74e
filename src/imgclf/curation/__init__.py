"""Curation: which cleaned pictures do not belong where they are filed (the audit stage's
ranking), and what a person decided about them (data/curation.csv, kept in git)."""
