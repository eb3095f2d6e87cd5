"""DIPS Majordomo core: the wire (``protocol``), ``broker``, ``worker`` and ``client``."""

import logging

# A library never configures logging: without this, Python's handler of last resort would
# print our warnings (a broker that cannot be reached, say) to the caller's stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())
