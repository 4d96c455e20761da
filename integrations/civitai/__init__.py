"""civitai.com: the HTTP client and the simulator."""
