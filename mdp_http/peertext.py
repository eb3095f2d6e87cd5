"""Text from peers as JSON may carry it.

:func:`mdp.body.unpack` keeps a msgpack str that is not UTF-8 (PHP's msgpack packs bytes as
str) as a Python str with surrogate escapes, so that nothing is lost. Such a str is not
valid Unicode: JSON would carry it as lone surrogates (``"\\udcff"``), which strict parsers
refuse. Where it is data (a result) the door sends its bytes (``{"base64": ...}``,
:mod:`mdp_http.codec`); where it must stay text (a map key, an error message), the bytes
that were not UTF-8 become U+FFFD.
"""

from __future__ import annotations

from mdp.body import as_bytes


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode: not a peer's non-UTF-8 bytes held as surrogate
    escapes (:func:`mdp.body.unpack` keeps them so, to lose nothing)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True




def unicode_text(text: str) -> str:
    """``text`` as valid Unicode, a peer's bytes that were not UTF-8 as U+FFFD (for what
    must stay text: a map key, an error message)."""
    if text.isascii() or is_unicode(text):
        return text
    return as_bytes(text).decode("utf-8", "replace")
