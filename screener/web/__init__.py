"""The web console (``screener web``): a FastAPI app over the same database as the agent.

One router module per resource (:mod:`.dashboard`, :mod:`.calls`, :mod:`.lists`,
:mod:`.voicemail`, :mod:`.audit`, and :mod:`.auth` for logging in); shared pieces in
:mod:`.core`. Arrows point down only: the console uses ``webstore``, ``policy``, ``numbers``,
``transfer``, ``config`` and ``agentstatus`` (the report file the agent writes), never the
agent itself (``service``).
"""
