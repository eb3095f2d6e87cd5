"""Operations tests: supervisord, mdpctl, and the fleet end to end."""
