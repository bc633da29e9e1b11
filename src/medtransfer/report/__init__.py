"""The report stage: collect finished runs, aggregate seeds, compare setups, write tables, figures and HTML."""
