"""Model server: every model of the repository served over gRPC with ONNX Runtime (`registry`), batched."""
