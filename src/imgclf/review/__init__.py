"""The review page, `python -m imgclf review`: a person looks at the audit's suspects in a browser
and decides (reject, keep, relabel); each decision goes to data/curation.csv at once. A command,
not a stage: changing this code re-runs nothing."""
