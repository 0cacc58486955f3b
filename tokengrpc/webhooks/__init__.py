"""Webhooks (CONTRACT section 13): every audit event POSTed, signed, to each URL.

``signing.py`` signs as Standard Webhooks says, ``payload.py`` writes the
body, ``schedule.py`` says when to try again, ``sender.py`` hands the
store's outbox (``tokengrpc/store/outbox.py``) to the URLs. docs/webhooks.md
is the receiver's side.
"""
