"""After pooling: truncation, normalization, quantization and conversion, and similarity scores.

The order and the meanings are sentence-transformers': a vector is cut to ``truncate_dim``, then
L2-normalized, then quantized (``precision``), then converted to a torch tensor if asked. The
quantization is sentence-transformers' own ``quantize_embeddings`` (``pip install 'nosink[mteb]'``):
int8 and uint8 map each dimension's range *in the vectors being encoded* onto 256 steps, so encode
a representative batch, not one text at a time; binary and ubinary pack the signs into bits.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from nosink.errors import Choice, NosinkError, check_bool


class Precision(Choice):
    """The number format of returned embeddings (sentence-transformers' ``precision``)."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"
    BINARY = "binary"
    UBINARY = "ubinary"

    @classmethod
    def noun(cls) -> str:
        return "precision"


class SimilarityFunction(Choice):
    """How two embeddings are compared (sentence-transformers' ``similarity_fn_name``)."""

    COSINE = "cosine"
    DOT = "dot"
    EUCLIDEAN = "euclidean"  # the negative L2 distance: higher is more similar
    MANHATTAN = "manhattan"  # the negative L1 distance

    @classmethod
    def noun(cls) -> str:
        return "similarity function"


def finish(
    vectors: np.ndarray,
    *,
    normalize: bool = False,
    truncate_dim: int | None = None,
    precision: Precision | str = Precision.FLOAT32,
    convert_to_tensor: bool = False,
) -> np.ndarray | torch.Tensor:
    """Pooled vectors [N, D] float32 -> [N, d] as asked (d = ``truncate_dim`` or D; fewer columns when bit-packed)."""
    check_bool(normalize=normalize, convert_to_tensor=convert_to_tensor)
    precision = Precision.coerce(precision)
    dim = vectors.shape[-1]
    if truncate_dim is not None:
        if not isinstance(truncate_dim, int) or isinstance(truncate_dim, bool) or truncate_dim < 1:
            raise NosinkError(f"truncate_dim must be a positive integer, got {truncate_dim!r}")
        if truncate_dim > dim:
            raise NosinkError(f"truncate_dim={truncate_dim} is more than the embedding's {dim} dimensions")
        vectors = vectors[:, :truncate_dim]  # [N, d]
    if normalize:
        vectors = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(vectors)), dim=-1).numpy()
    if precision is not Precision.FLOAT32 and len(vectors):
        vectors = _quantize(vectors, precision)
    return torch.from_numpy(np.ascontiguousarray(vectors)) if convert_to_tensor else vectors


def _quantize(vectors: np.ndarray, precision: Precision) -> np.ndarray:
    if importlib.util.find_spec("sentence_transformers") is None:
        raise NosinkError(
            f"precision={precision.value!r} uses sentence-transformers' quantize_embeddings; "
            "install it with: pip install 'nosink[mteb]'"
        )
    if precision in (Precision.INT8, Precision.UINT8) and len(vectors) < 2:
        raise NosinkError(
            f"precision={precision.value!r} calibrates each dimension's range on the texts encoded together; "
            "encode at least two texts (a representative batch), or use float32"
        )
    from sentence_transformers.util.quantization import quantize_embeddings

    return quantize_embeddings(vectors, precision=precision.value)


def similarity(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, function: SimilarityFunction | str
) -> torch.Tensor:
    """Scores [N, M] between the rows of ``a`` [N, D] and ``b`` [M, D] (a single [D] vector counts as one row)."""
    function = SimilarityFunction.coerce(function)
    x, y = (_as_matrix(v, name) for v, name in ((a, "the first"), (b, "the second")))
    if x.shape[-1] != y.shape[-1]:
        raise NosinkError(f"embeddings of {x.shape[-1]} and {y.shape[-1]} dimensions cannot be compared")
    if function is SimilarityFunction.COSINE:
        x, y = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(y, dim=-1)
    if function in (SimilarityFunction.COSINE, SimilarityFunction.DOT):
        return x @ y.T  # [N, M]
    p = 2.0 if function is SimilarityFunction.EUCLIDEAN else 1.0
    return -torch.cdist(x, y, p=p)  # [N, M]


def _as_matrix(value: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if tensor.ndim == 1:
        tensor = tensor[None]  # [D] -> [1, D]
    if tensor.ndim != 2 or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise NosinkError(f"{name} embeddings must be real [N, D] or [D], got {tuple(tensor.shape)} {tensor.dtype}")
    return tensor.float()
