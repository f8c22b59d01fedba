"""A running ``recllm serve`` takes a new catalog without a restart (issue 31, item 3).

- :class:`ServedRecommender` holds the :class:`~recllm.apps.recommender.Recommender` that
  requests use. A request reads :attr:`ServedRecommender.current` once, when it starts, and
  keeps that object to the end; a reload builds a whole new Recommender first and then swaps it
  in with one reference assignment. Requests in flight therefore finish on the old catalog and
  requests that start after the swap see the new one; no request sees a half-loaded catalog.
- :class:`CatalogReloader` loads a model directory with every check a load makes (model,
  tokenizer and SID map belong together, the data's catalog is the model's) and swaps it in.
  On the ``hf`` engine the whole directory is loaded (weights too). On the ``vllm`` engine the
  weights stay those the engine loaded: the reload is catalog-only (SID map, trie, titles) and
  refuses a directory whose weight files differ from the served ones (their SHA-256), with the
  fix (restart the server). A failed reload leaves the old catalog serving.
- :func:`admin_router`: ``POST /v1/admin/reload`` with an optional ``{"model_dir": DIR}`` and the
  header ``Authorization: Bearer TOKEN``. The route exists only when the server was started
  with ``--admin-token`` (or ``RECLLM_ADMIN_TOKEN``); a missing or wrong token gets 401 (the
  token is compared in constant time).
- :func:`install_sighup`: ``kill -HUP PID`` reloads the directory the server started with.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint's annotations
# (``request: Request``) at definition time, and Request is imported lazily.
import asyncio
import hashlib
import hmac
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

from recllm.apps.serve_limits import error_body
from recllm.errors import UserError, clip

__all__ = [
    "ADMIN_TOKEN_ENV",
    "CatalogReloader",
    "ServedRecommender",
    "admin_router",
    "install_sighup",
    "weight_hashes",
]

logger = logging.getLogger(__name__)

#: Environment variable that gives the admin token when ``--admin-token`` is not passed.
ADMIN_TOKEN_ENV = "RECLLM_ADMIN_TOKEN"
_RELOAD_FIELDS = {"model_dir"}


class ServedRecommender:
    """The recommender requests use, swapped as a whole by a reload.

    Args:
        recommender: The recommender the server starts with.
    """

    def __init__(self, recommender: Any) -> None:
        self.current = recommender
        self.generation = 0

    def swap(self, recommender: Any) -> None:
        # One reference assignment: a request holds whichever object it read when it started.
        self.current = recommender
        self.generation += 1


def weight_hashes(model_dir: str | Path) -> dict[str, str]:
    """SHA-256 of every weight file of ``model_dir`` (``*.safetensors``, ``*.bin`` and the
    shard index), by file name."""
    from recllm.vocab.checkpoint import _is_weights

    out = {}
    for path in sorted(Path(model_dir).iterdir()):
        if path.is_file() and _is_weights(path.name):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[path.name] = digest.hexdigest()
    return out


class CatalogReloader:
    """Loads a model directory and swaps it into a :class:`ServedRecommender`.

    Args:
        served: What requests read.
        start_dir: The directory the server started with (the default of a reload, and what
            SIGHUP reloads).
        engine: ``"hf"`` (load everything) or ``"vllm"`` (catalog only; same weights).
        data: ``--data`` of the server, or None for the data each model records.
        max_k: ``--max-k`` of the server.
        allow_other_data: ``--allow-other-data`` of the server.
        dtype: Model dtype of the ``hf`` engine.
    """

    def __init__(
        self,
        served: ServedRecommender,
        start_dir: str | Path,
        *,
        engine: str,
        data: str | None = None,
        max_k: int = 50,
        allow_other_data: bool = False,
        dtype: str = "float32",
    ) -> None:
        self.served = served
        self.start_dir = Path(start_dir)
        self.engine = engine
        self.data = data
        self.max_k = max_k
        self.allow_other_data = allow_other_data
        self.dtype = dtype
        self._lock = asyncio.Lock()
        # the weights the vLLM engine loaded: a catalog-only reload must keep exactly these
        self._served_weights = weight_hashes(self.start_dir) if engine == "vllm" else None

    async def reload(self, model_dir: str | Path | None = None) -> dict[str, Any]:
        """Load ``model_dir`` (default: the start directory) and swap it in.

        Runs the load in a worker thread, so the server keeps answering on the old catalog
        meanwhile; one reload at a time.

        Returns:
            ``{"model_dir", "items", "sid_map_hash", "previous_items", "seconds"}``.

        Raises:
            UserError / VocabMismatchError / ValueError: The directory cannot be served
                (nothing was swapped; the old catalog keeps serving).
        """
        path = Path(model_dir) if model_dir is not None else self.start_dir
        async with self._lock:
            start = time.perf_counter()
            old = self.served.current
            new = await asyncio.to_thread(self._load, path, old)
            if self.engine == "vllm":
                await _engine_load_catalog(old.backend, path)
            self.served.swap(new)
            answer = {
                "model_dir": str(path),
                "items": len(new.sid_map),
                "sid_map_hash": new.sid_map.content_hash,
                "previous_items": len(old.sid_map),
                "seconds": round(time.perf_counter() - start, 3),
            }
            logger.info("catalog reloaded: %s", answer)
            return answer

    def _load(self, path: Path, old: Any) -> Any:
        from recllm.apps.recommender import Recommender
        from recllm.vocab.checkpoint import check_model_dir

        if not path.is_dir():
            raise UserError(
                f"model_dir {clip(str(path))}",
                "no such directory on the server",
                "send the path of a model directory on the server's machine (recllm catalog "
                "add --out DIR writes one)",
            )
        check_model_dir(path, weights=True)
        backend = None
        if self.engine == "vllm":
            self._check_same_weights(path)
            self._check_same_tokens(path, old)
            backend = old.backend
        return Recommender.from_pretrained(
            path,
            engine=self.engine,
            data=self.data,
            max_k=self.max_k,
            dtype=self.dtype,
            backend=backend,
            batch_size=old.batch_size,
            allow_other_data=self.allow_other_data,
        )

    def _check_same_weights(self, path: Path) -> None:
        new = weight_hashes(path)
        if new != self._served_weights:
            differ = sorted(
                n
                for n in set(new) | set(self._served_weights or {})
                if new.get(n) != (self._served_weights or {}).get(n)
            )
            raise UserError(
                f"model_dir {clip(str(path))}",
                f"its weights differ from the served model's ({', '.join(differ)}); the vLLM "
                "engine reloads catalogs only (SID map, trie, titles), not weights",
                f"restart the server on it (recllm serve --model {clip(str(path))}); the old "
                "catalog keeps serving",
            )

    @staticmethod
    def _check_same_tokens(path: Path, old: Any) -> None:
        from recllm.vocab.checkpoint import read_vocab_record

        record = read_vocab_record(path)
        was = read_vocab_record(old.model_dir)
        keys = ("first_sid_token_id", "codebook_sizes")
        if any(record.get(k) != was.get(k) for k in keys):
            raise UserError(
                f"model_dir {clip(str(path))}",
                f"its SID tokens ({', '.join(f'{k}={record.get(k)}' for k in keys)}) are not the "
                f"served model's ({', '.join(f'{k}={was.get(k)}' for k in keys)})",
                f"restart the server on it (recllm serve --model {clip(str(path))})",
            )


async def _engine_load_catalog(engine_client: Any, path: Path) -> None:
    """Tell the SID logits processors in vLLM's engine processes to load ``path``'s trie (they
    keep the previous one for requests that started on it)."""
    from recllm.decode.vllm_processor import RELOAD_METHOD

    results = await engine_client.collective_rpc(RELOAD_METHOD, args=(str(path),))
    if not results or not all(results):
        raise UserError(
            "vLLM engine",
            f"no SID logits processor took the new catalog ({results})",
            "restart the server (recllm serve --model DIR)",
        )


def admin_router(reloader: CatalogReloader, token: str):
    """A FastAPI router with ``POST /v1/admin/reload`` behind ``Authorization: Bearer TOKEN``.

    Raises:
        ValueError: An empty token (the route would be open).
    """
    if not token:
        raise ValueError("the admin token is empty; Fix: pass --admin-token with a secret")
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse

    router = APIRouter()
    expected = token.encode()

    def error(e: BaseException | str, status: int) -> JSONResponse:
        return JSONResponse(error_body(clip(str(e), 2000), status), status_code=status)

    @router.post("/v1/admin/reload")
    async def reload(request: Request) -> JSONResponse:
        given = request.headers.get("authorization", "")
        scheme, _, secret = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(secret.encode(), expected):
            return error(
                UserError(
                    "Authorization",
                    "missing or wrong admin token",
                    "send the header 'Authorization: Bearer TOKEN' with the server's --admin-token",
                ),
                401,
            )
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict) or set(body) - _RELOAD_FIELDS:
                raise ValueError
            model_dir = body.get("model_dir")
            if model_dir is not None and not isinstance(model_dir, str):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            return error(
                UserError(
                    "request body",
                    "not a reload request",
                    'send {} (the start directory) or {"model_dir": "/path/to/model"}',
                ),
                400,
            )
        try:
            answer = await reloader.reload(model_dir)
        except (UserError, ValueError) as e:  # the directory's fault; the old catalog serves
            logger.warning("reload of %s refused: %s", model_dir or reloader.start_dir, e)
            return error(e, 400)
        except Exception as e:
            logger.exception("reload of %s failed", model_dir or reloader.start_dir)
            return error(
                f"reload failed ({type(e).__name__}: {clip(str(e), 300)}); the old catalog "
                "keeps serving. Fix: see the server log for the traceback",
                500,
            )
        return JSONResponse({"object": "reload", **answer})

    return router


def install_sighup(reloader: CatalogReloader, loop: asyncio.AbstractEventLoop) -> None:
    """``kill -HUP PID`` reloads the start directory (errors are logged; the old catalog keeps
    serving)."""

    async def run() -> None:
        try:
            await reloader.reload()
        except Exception:
            logger.exception(
                "SIGHUP reload of %s failed; the old catalog keeps serving", reloader.start_dir
            )

    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(run()))
