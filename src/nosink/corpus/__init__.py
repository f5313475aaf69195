"""Corpus embedding: stream a JSONL, CSV or Parquet corpus into resumable Parquet shards.

Needs pyarrow (``pip install "nosink[corpus]"``); the Ray engine also needs ``nosink[ray]``.
"""
