"""create_app(): the FastAPI app for one validated config. Nothing is built
at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from modelyard.router import (
    __version__,
    admin,
    anthropic,
    chat,
    completions,
    embeddings,
    errors,
    files,
    health,
    images,
    models,
    openapi,
    responses,
    sessions,
    skills,
    speech,
    transcription,
)
from modelyard.router.agent_runtime import AgentRuntime
from modelyard.router.config import LoadedConfig
from modelyard.router.deps import Yard
from modelyard.router.metrics import Metrics
from modelyard.router.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    DynamicCORSMiddleware,
    RequestContextMiddleware,
)
from modelyard.router.registry import Registry
from modelyard.router.reload import Reloader
from modelyard.router.response_service import ResponsesService, storage_path
from modelyard.router.skill_store import SkillStore, skills_folder
from modelyard.router.storage import ResponseStore

log = logging.getLogger("modelyard")
STATIC_DIR = Path(__file__).parent / "static"
def warn_if_exposed(loaded: LoadedConfig) -> None:
    server = loaded.config.server
    if not server.is_loopback() and not loaded.config.auth.keys:
        log.warning(
            "!!! listening on %s with no API keys: anyone who can reach this machine can use every model. "
            "Add [[auth.keys]] to the config or listen on 127.0.0.1. !!!",
            server.host,
        )


def create_app(
    loaded: LoadedConfig,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    watch: bool = True,
) -> FastAPI:
    registry = Registry()
    metrics = Metrics(lambda: registry)
    registry.metrics = metrics
    reloader = Reloader(registry, config_path, overrides) if config_path else None
    ui = loaded.config.server.ui
    # The storage path is read once: changing it needs a restart.
    response_service = ResponsesService(ResponseStore(storage_path(loaded)))
    skill_store = SkillStore(storage_path(loaded), skills_folder(loaded))
    file_store = files.store_for(loaded)
    agent_runtime = AgentRuntime(loaded, lambda: app.state.yard.files, lambda: app.state.yard.skills)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stack = contextlib.AsyncExitStack()
        await registry.apply(loaded, wait_for_loads=False)
        await response_service.start()
        await skill_store.start()
        app.state.yard.files = await stack.enter_async_context(files.serving(file_store))
        await agent_runtime.start()
        app.state.yard.agent = agent_runtime
        warn_if_exposed(loaded)
        watcher = None
        if reloader is not None:
            reloader.install_sighup()
            if watch:
                watcher = asyncio.create_task(reloader.watch(), name="config-watcher")
        try:
            yield
        finally:
            if reloader is not None:
                reloader.stop()
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            app.state.yard.agent = None
            await agent_runtime.close()  # its sessions' runs end before the file store closes
            await stack.aclose()
            await response_service.stop()
            await skill_store.close()
            await registry.shutdown()

    app = FastAPI(
        title="modelyard",
        version=__version__,
        description="Local models behind OpenAI-compatible APIs.",
        lifespan=lifespan,
    )
    app.state.yard = Yard(
        registry=registry, metrics=metrics, reloader=reloader, ui=ui, responses=response_service, skills=skill_store
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(models.router)
    app.include_router(chat.router)
    app.include_router(anthropic.router)
    app.include_router(completions.router)
    app.include_router(embeddings.router)
    app.include_router(images.router)
    app.include_router(responses.router)
    app.include_router(skills.router)
    app.include_router(files.router)
    app.include_router(sessions.router)
    app.include_router(speech.router)
    app.include_router(transcription.router)
    openapi.install(app)
    if ui and (STATIC_DIR / "index.html").exists():
        app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse("/ui/")

    def current() -> Any:
        return registry.current

    # add_middleware wraps: the last added is the outermost. The key is
    # checked before the body limit reads (and buffers) a chunked body.
    app.add_middleware(BodyLimitMiddleware, get_generation=current)
    app.add_middleware(ApiKeyMiddleware, get_generation=current)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.add_middleware(DynamicCORSMiddleware, get_generation=current)
    return app
