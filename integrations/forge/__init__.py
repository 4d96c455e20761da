"""Stable Diffusion WebUI Forge 2 / AUTOMATIC1111 1.10: the HTTP client and the simulator.

- `client.py`: `ForgeClient`, the only code that talks HTTP to a generation server, its
  results (`Txt2ImgResult`, `TaskProgress`) and errors (`ForgeError` and subclasses).
- `simulator/`: `ForgeSimulator`, a real HTTP server playing either flavour, for tests, the
  benchmarks and `manage.py forge_simulator`.

Invariants: no Django models or MobileSD apps imported (server records are read duck-typed,
`ServerEndpoint.from_server`); the client and the simulator do not import each other, so the
simulator can only pass for a real server through HTTP.
"""
