"""Offline evaluation on judged queries (`mmsearch eval`, issue 13): judgements, ranking metrics, paired statistics.

This first part holds what does not need a running service: reading judged query sets (`qrels`), the metrics of one
ranked list (`metrics`), and the paired comparison of two experiments over the same queries (`stats`).
"""
