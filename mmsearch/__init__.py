"""mmsearch: multimodal semantic search (SBERT and CLIP on ONNX Runtime, Milvus, MongoDB)."""

__version__ = "0.1.0"
