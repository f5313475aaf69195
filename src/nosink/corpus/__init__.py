"""Corpus embedding: stream a JSONL, CSV or Parquet corpus into resumable Parquet shards.

>>> from nosink.corpus import CorpusSource, EncoderSpec, embed_corpus
>>> spec = EncoderSpec("TinyLlama/TinyLlama_v1.1", plan="mask0&bidir:k=4,k0=1")
>>> embed_corpus(spec, CorpusSource.open("docs.jsonl"), "docs-vectors/", store_text=True)

Needs pyarrow (``pip install "nosink[corpus]"``); the Ray engine also needs ``nosink[ray]``.
"""

from nosink.corpus.embed import EmbedReport, Engine, embed_corpus
from nosink.corpus.job import EncoderSpec, RayOptions
from nosink.corpus.reader import CorpusSource, InputFormat, Record
from nosink.corpus.shards import Shard, iter_shards, read_manifest, read_shard

__all__ = [
    "CorpusSource",
    "EmbedReport",
    "EncoderSpec",
    "Engine",
    "InputFormat",
    "RayOptions",
    "Record",
    "Shard",
    "embed_corpus",
    "iter_shards",
    "read_manifest",
    "read_shard",
]
