"""Conversations the router keeps for stateless callers (docs/sessions.md).

=================  ==============================================================
``model``          Turn, SessionInfo, Session, Summary; the strategies; session ids
``store``          SessionStore, the one interface of the stores
``sqlite``         the embedded default: one file, no server
``redis``          a fleet of router replicas
``dynamodb``       state kept in AWS (conditional writes, TTL)
``stores``         open_store: the store ``sessions.store`` names
``fitting``        fit: a history into one window (pure)
``context``        Sessions, Conversation: a session request through dispatch
``summaries``      Summarizer: running summaries, off the request path
=================  ==============================================================

``router.server.app`` builds them at start (:func:`build`); ``router.server.sessions_service``
serves SessionService; ``router.dispatch`` fits and stores the turns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.config import SessionsConfig
    from router.dispatch import Dispatcher
    from router.sessions.context import Sessions
    from router.sessions.summaries import Summarizer


def build(
    cfg: SessionsConfig, dispatcher: Dispatcher, environ: Mapping[str, str] | None = None
) -> tuple[Sessions, Summarizer]:
    """The router's sessions on the store ``cfg`` names, with summaries made through
    ``dispatcher``; sets ``dispatcher.sessions``."""
    from router.sessions.context import Sessions
    from router.sessions.stores import open_store
    from router.sessions.summaries import Summarizer

    store = open_store(cfg, os.environ if environ is None else environ)
    sessions = Sessions(store, cfg, dispatcher.tokens)
    summarizer = Summarizer(
        sessions, lambda request, access: dispatcher.generate(request, access=access), cfg.summaries
    )
    sessions.on_commit = summarizer.after_commit
    dispatcher.sessions = sessions
    return sessions, summarizer
