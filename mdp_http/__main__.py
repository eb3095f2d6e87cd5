"""``python -m mdp_http --listen HOST:PORT --broker ENDPOINT ...``"""

from mdp_http.app import main

raise SystemExit(main())
