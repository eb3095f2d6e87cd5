"""What the brokers say about themselves: each broker's ``mmi.status`` as a view.

The schema and its decoding are :mod:`mdp.status`'s; here a broker that fails to answer
becomes a view with the reason, rather than an exception that stops mdpctl.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from mdp import status as st
from mdp.errors import MDPError, ProtocolError, Timeout
from mdp.keys import CurveConfig
from mdp.statusfetch import fetch
from mdpctl.bounded import call_bounded, check_listening
from mdpctl.errors import Unreachable, WaitTimeout

log = logging.getLogger(__name__)


def fetch_status(
    endpoint: str, timeout_s: float = 2.0, curve: CurveConfig | None = None
) -> st.BrokerView:
    """Ask one broker for ``mmi.status``; a broker that fails gives a view with an error."""
    try:
        check_listening(endpoint, timeout_s)
        status = call_bounded(
            lambda: fetch(endpoint, timeout_s=timeout_s, curve=curve),
            timeout_s + 1.0,
            "mmi.status",
        )
        return st.BrokerView(endpoint, status)
    except Unreachable as exc:
        return st.BrokerView(endpoint, None, f"not reachable ({exc})")
    except ProtocolError as exc:
        log.warning("broker %s sent a bad mmi.status: %s", endpoint, exc)
        return st.BrokerView(endpoint, None, str(exc))
    except (Timeout, WaitTimeout):
        return st.BrokerView(endpoint, None, f"no answer within {timeout_s:g} s")
    except MDPError as exc:
        return st.BrokerView(endpoint, None, f"mmi.status failed: {exc}")


def fetch_all(
    endpoints: Sequence[str], timeout_s: float = 2.0, curve: CurveConfig | None = None
) -> list[st.BrokerView]:
    """Every broker's view, asked in parallel so that dead brokers cost one timeout."""
    if len(endpoints) == 1:
        return [fetch_status(endpoints[0], timeout_s, curve)]
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        return list(pool.map(lambda e: fetch_status(e, timeout_s, curve), endpoints))
