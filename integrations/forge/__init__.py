"""Stable Diffusion WebUI Forge / AUTOMATIC1111: the HTTP client and the simulator."""
