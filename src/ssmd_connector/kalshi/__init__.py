"""Kalshi, both sides, without I/O: the wire vocabulary and frames (:mod:`.wire`), the client's
protocol state (:mod:`.client`, used by the recorder's connector), the server's (:mod:`.server`,
used by the simulator), and request signing (:mod:`.auth`).

Modelled on ``websockets`` (one protocol shared by client and server, thin I/O layers beside) and
``h11`` (state machines that neither read sockets nor clocks: callers pass ``now``).
"""
