"""The web console (``screener web``): a FastAPI app over the same database as the agent.

One router module per resource (:mod:`.dashboard`, :mod:`.calls`, :mod:`.lists`,
:mod:`.voicemail`, :mod:`.audit`, and :mod:`.auth` for logging in); shared pieces in
:mod:`.core`. Arrows point down only: the console uses ``webstore``, ``policy``, ``numbers``,
``transfer`` and ``config``, never the agent (``service``).
"""
