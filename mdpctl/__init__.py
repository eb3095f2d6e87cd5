"""mdpctl: run a DIPS fleet through supervisord and the brokers' mmi.status."""
