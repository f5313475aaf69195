"""nosink: any decoder LLM as a text encoder, without training ("Look Both Ways and No Sink", ACL 2025).

>>> from nosink import Encoder
>>> encoder = Encoder.from_pretrained("TinyLlama/TinyLlama_v1.1", plan="mask0&bidir:k=17,k0=2")
>>> vectors = encoder.encode(["a cat", "a dog"], normalize=True)  # [2, D] float32
"""

from nosink.attention import AttentionRecord
from nosink.encoder import Encoder, TokenEncoding
from nosink.errors import NosinkError
from nosink.patterns import LayerPattern, Pattern
from nosink.plan import Architecture, Plan, Schedule
from nosink.pooling import Pooling
from nosink.recipe import Recipe

__all__ = [
    "Architecture",
    "AttentionRecord",
    "Encoder",
    "LayerPattern",
    "NosinkError",
    "Pattern",
    "Plan",
    "Pooling",
    "Recipe",
    "Schedule",
    "TokenEncoding",
]
__version__ = "0.1.0"
