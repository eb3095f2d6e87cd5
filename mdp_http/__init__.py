"""``mdp-http``: the DIPS HTTP gateway (API, metrics, live dashboard); see docs/HTTP.md."""
