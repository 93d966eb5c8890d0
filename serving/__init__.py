"""The online side: artifact loading, user tower runner, index search, the gRPC server.

Serving never imports torch, nor the training package."""
