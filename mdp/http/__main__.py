"""``python -m mdp.http --listen HOST:PORT --broker ENDPOINT ...``"""

from mdp.http.app import main

raise SystemExit(main())
