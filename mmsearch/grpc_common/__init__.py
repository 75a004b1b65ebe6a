"""gRPC plumbing shared by the tokenizer service and the model server: server creation, health, reflection,
Prometheus metrics, graceful stop, status errors, and the client side's typed error and channels."""
