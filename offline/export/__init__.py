"""Export sentence-transformers and CLIP models to ONNX in the model repository (`mmsearch export`)."""
