"""What can go wrong when a request asks a model for work, as typed
exceptions of the registry layer. They say what happened, not how an API
answers it: router/errors.py's `api_error_from` maps each to a status code
and an error body, in one place."""

from __future__ import annotations


class ModelError(Exception):
    """A model could not serve a request."""

    def __init__(self, model_id: str, message: str) -> None:
        super().__init__(message)
        self.model_id = model_id
        self.message = message


class ModelBusy(ModelError):
    """Admission refused the request: the model's queue (`max_queue`) is full."""

    def __init__(self, model_id: str, inflight: int) -> None:
        super().__init__(model_id, f"{inflight} requests are in progress or waiting")
        self.inflight = inflight


class ModelTimedOut(ModelError):
    """The request passed the model's `request_timeout` and was stopped."""

    def __init__(self, model_id: str, timeout: float) -> None:
        super().__init__(model_id, f"the request took longer than {timeout:g}s")
        self.timeout = timeout


class ModelLoadFailed(ModelError):
    """The model's worker could not load it."""


class WorkerFailed(ModelError):
    """The worker reported a failed call (`kind` as the adapter classified it,
    `param` naming the request field to blame), or died under it (kind
    "worker_crashed")."""

    def __init__(self, model_id: str, kind: str, message: str, param: str | None = None) -> None:
        super().__init__(model_id, message)
        self.kind = kind
        self.param = param


class ModelNotFound(ModelError):
    """No model of the config in force has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"no model is named {name!r}")


class NoModelConfigured(ModelError):
    """A request named no model and none of its modality is configured."""

    def __init__(self, modality: str) -> None:
        super().__init__("", f"no {modality} model is configured")
        self.modality = modality


class WrongModality(ModelError):
    """The named model does another kind of work than the endpoint needs."""

    def __init__(self, name: str, has: str, needs: str, endpoint: str) -> None:
        super().__init__(name, f"{name!r} is a {has} model; {endpoint} needs a {needs} model")
        self.has = has
        self.needs = needs
        self.endpoint = endpoint
