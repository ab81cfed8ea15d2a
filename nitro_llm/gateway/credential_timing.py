"""When the gateway refreshes the role's credentials and hands them to the enclave: the numbers, in
one place, because they only work together.

IMDS publishes the role's next credentials at least ``REFRESH_MARGIN`` (5 minutes) before the current
ones expire, and the IMDS source fetches only once inside that margin (before it, it serves its
cache). The gateway pushes the current credentials to the enclave every ``PUSH_PERIOD_SECONDS``
(60 s): five pushes fall inside the margin, so a failed IMDS fetch on one of them is made good by the
next, a minute later and still minutes before expiry. With a push period equal to the margin (the
old 300 s), the first push inside the margin was also the last before expiry: one IMDS hiccup then
left the enclave holding expired credentials for up to a whole period.

A push of unchanged credentials costs one small frame on the link; the enclave keeps its KMS client.
"""

from __future__ import annotations

from datetime import timedelta

REFRESH_MARGIN = timedelta(minutes=5)
"""IMDS publishes new role credentials at least five minutes before the old ones expire, so
refreshing inside that window always finds fresh ones."""

PUSH_PERIOD_SECONDS = 60.0
"""How often the gateway hands the enclave the role's current credentials (a fifth of the margin)."""

MAX_PUSH_PERIOD_SECONDS = REFRESH_MARGIN.total_seconds() / 2
"""The longest push period the gateway accepts: at least two pushes inside the margin, so that one
failed fetch never outlives the credentials it should have replaced."""

PUSH_RETRY_SECONDS = 1.0
"""The pause before the next attempt when a hand-off failed (no credentials yet, enclave not up)."""
