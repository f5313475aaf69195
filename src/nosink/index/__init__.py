"""A vector index over an embedded corpus (FAISS, extra ``nosink[index]``), and search with the corpus's own encoder.

>>> from nosink.index import Retriever, build_index
>>> build_index("corpus/")                       # exact (flat) cosine index in corpus/index/
>>> retriever = Retriever.from_corpus("corpus/")  # loads the encoder named by the manifest
>>> hits = retriever.search("how do I reset my PIN?", k=5)  # [Hit(id, score, position, text), ...]

FAISS itself is imported only when an index is built or loaded.
"""

from nosink.index.index import (
    Hit,
    IndexKind,
    Retriever,
    VectorIndex,
    build_index,
    check_encoder,
    corpus_fingerprint,
    index_dir,
    normalize_rows,
)

__all__ = [
    "Hit",
    "IndexKind",
    "Retriever",
    "VectorIndex",
    "build_index",
    "check_encoder",
    "corpus_fingerprint",
    "index_dir",
    "normalize_rows",
]
