"""DIPS Majordomo core: the wire (``protocol``), ``broker``, ``worker`` and ``client``."""
