"""Hooks loaded by scripts/schemathesis.sh (SCHEMATHESIS_HOOKS).

Works around a crash in schemathesis 4.32.5 itself: after each 2xx JSON response it
looks for links in every string value that starts with http:// or https:// and parses
it with urllib's urlsplit, which raises "Invalid IPv6 URL" on text such as
"http://[" -- text a merchant may legitimately store (metadata, description) and that
the API echoes back. The exception aborts the whole run ("Test Execution Error")
instead of skipping that string. This makes such a string "not a link", which is what
the function returns for every other non-link; no check is weakened.
"""

from schemathesis.engine import observations

_original_same_origin_path = observations._same_origin_path


def _same_origin_path_tolerant(value, origin):
    try:
        return _original_same_origin_path(value, origin)
    except ValueError:
        return None


observations._same_origin_path = _same_origin_path_tolerant
