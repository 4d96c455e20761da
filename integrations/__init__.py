"""The outside systems MobileSD talks to, one package each, its client beside its simulator.

- `integrations.forge`: Stable Diffusion WebUI Forge / AUTOMATIC1111 (`client.py`, `simulator/`).
- `integrations.civitai`: civitai.com (`client.py`, `simulator/`).
- `integrations.errors`: `IntegrationError`, the base of both clients' errors (a stable
  `code`, `transient` or not, the outside answer's status and `Retry-After`).
- `integrations.http`: what every outgoing call carries (the User-Agent, defined only there)
  and reads (`Retry-After`).
- `integrations.simulator_http`: the HTTP server plumbing both simulators share, and the
  foreground loop of their management commands.

Invariants:
- Only the clients here make HTTP calls to the outside world, always with timeouts, and
  every failure surfaces as an `IntegrationError` subclass, never a `requests` exception.
- Nothing in this package imports Django models or any MobileSD app (not even `core_app`):
  it sits just above `core_app` in the layering, and the apps import it, never the other
  way round. The one Django import is the settings read of `forge.client.job_timeout`,
  inside a function and tolerant of Django not being set up.
- No import circle inside the package; a simulator imports `simulator_http` and its own
  modules, never the other simulator or a client.
"""
