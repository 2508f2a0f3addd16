"""The gRPC transport: grpcio's thread-pool server (``sync_server``) or grpc.aio (``aio_server``).

Both share the settings, health and reflection services, error mapping and per-RPC
bookkeeping kept in the other modules here; the service's own servicers live in ``api.py``.
"""
