"""``python -m mdp.gearman``: the same as ``mdp-gearman``."""

from mdp.gearman.server import main

raise SystemExit(main())
