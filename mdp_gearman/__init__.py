"""A Gearman front door for DIPS: ``mdp-gearman`` (see docs/GEARMAN.md)."""
