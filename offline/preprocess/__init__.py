"""Raw corpora (QA files, image folders) to the normalised jsonl that `index` and `push` read."""
