"""The HTTP transport: FastAPI served by uvicorn (uvloop + httptools), one process.

``python -m`` the package runs :func:`server.main`. Scale with more containers, not more
worker processes in one: each process has its own event loop, stall watchdog and offload pool.
"""
