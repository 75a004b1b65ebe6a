"""Turning texts and images into model inputs and running ONNX Runtime: the one implementation shared by the
tokenizer service, the model server, the offline indexer and the benchmarks, so offline and online agree."""
