"""Where frames enter: the WebSocket transport and generic connector (:mod:`.websocket`) and the
Kalshi connector (:mod:`.kalshi`). :mod:`ssmd_connector.assembly.recorder` picks the one a feed
asks for.
"""
