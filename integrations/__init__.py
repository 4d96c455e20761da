"""The outside systems MobileSD talks to, one package each, its client beside its simulator.

- `integrations.forge`: Stable Diffusion WebUI Forge / AUTOMATIC1111 (`client.py`, `simulator/`).
- `integrations.civitai`: civitai.com (`client.py`, `simulator/`).
- `integrations.http`: what every outgoing call carries (the User-Agent).
- `integrations.simulator_http`: the HTTP server plumbing both simulators share.

Only the clients here make HTTP calls to the outside world. Nothing in this package imports
Django models or any MobileSD app: it sits just above `core_app` in the layering.
"""
