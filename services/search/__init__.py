"""Search service: scenes, layers and A/B experiments over recall (Milvus), ranking and summary (MongoDB)."""
