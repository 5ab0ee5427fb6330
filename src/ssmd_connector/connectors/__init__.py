"""Sources of frames: the generic WebSocket connector and the Kalshi connector.

``build.build_connectors`` picks the implementation a feed asks for.
"""
