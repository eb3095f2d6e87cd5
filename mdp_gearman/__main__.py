"""``python -m mdp_gearman``: the same as ``mdp-gearman``."""

from mdp_gearman.server import main

raise SystemExit(main())
