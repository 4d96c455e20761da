"""civitai.com: the HTTP client and the simulator.

- `client.py`: `CivitaiClient` (REST API v1, downloads through signed storage URLs, preview
  images), its errors (`CivitaiError` and subclasses, each with the code and status of
  MobileSD's API answer).
- `simulator/`: `CivitaiSimulator`, a real HTTP server playing the API and its storage, for
  tests and `manage.py civitai_simulator`.

Invariants: no Django imports (settings are passed in by `civitai_app`); the client and the
simulator do not import each other; the simulator shares only `integrations.simulator_http`
with the Forge simulator.
"""
