"""What every route shares: the served model (engine + queue, or classifier), its name and the API key."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

from .errors import bad_request

if TYPE_CHECKING:
    from ..chat.classify import TextClassifier
    from ..model.engine import ChatEngine
    from .batcher import Batcher
    from .vllm_backend import VllmQueue


@dataclass
class ServerState:
    model_name: str
    api_key: Optional[str] = None
    engine: Optional["ChatEngine"] = None
    batcher: Optional[Union["Batcher", "VllmQueue"]] = None  # the transformers batcher, or vLLM's requests
    classifier: Optional["TextClassifier"] = None
    max_classify_inputs: int = 256
    created: int = field(default_factory=lambda: int(time.time()))
    classify_lock: threading.Lock = field(default_factory=threading.Lock)

    def check_model(self, name: Optional[str]) -> None:
        if name is not None and name != self.model_name:
            raise bad_request(f"The model {name!r} is not served here; this server serves {self.model_name!r} "
                              "(see GET /v1/models).", "model", "model_not_found")

    def require_engine(self, endpoint: str) -> "ChatEngine":
        if self.engine is None:
            raise bad_request(f"This server serves the classifier {self.model_name!r}, which has no {endpoint}; "
                              "use POST /v1/classify.", None, "wrong_endpoint")
        return self.engine
