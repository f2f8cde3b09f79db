"""The emotion application's ingress: POST /v1/emotion answered by the Emotion replica itself.

Why an application of its own: through the tutor's Ingress, a /v1/emotion request made two
hops (HAProxy -> Ingress -> Emotion by gRPC) and paid the Ingress's request handling on top of
the replica's. Served here it makes one (HAProxy -> this replica), which is what a one-text
request's latency is mostly made of (README "Benchmarks"). The same replicas are the tutor's
Emotion stage: the tutor's Ingress calls ``classify`` by a handle across applications, and
those calls are admitted by the Ingress, not here.

The HTTP edge is the tutor's: the same security middleware (keys, scopes, rate limits, body
limit), the same error shape, and a line of its own for places at work (admission).
"""

# No `from __future__ import annotations`: FastAPI must see the real annotation objects.

from ray import serve

from deployments.config import EmotionUserConfig
from deployments.emotion import EmotionDeployment
from deployments.http_edge import guarded_api
from deployments.lifecycle.rollout import UnknownVersionError
from deployments.schemas import EmotionRequest, EmotionResponse
from deployments.security.gate import Gate
from deployments.security.middleware import install_gate
from deployments.telemetry import AdmissionMetrics
from deployments.tutoring.admission import Admission, admit
from deployments.tutoring.exceptions import ConflictError
from store import TutorStore, open_store


class _PrefixAlone:
    """POST /v1/emotion is the application's route prefix alone, which leaves Starlette an
    empty route path: no route of a Serve ingress can have it (Serve re-includes the routes,
    and FastAPI refuses an empty path), and Starlette would answer 307 to /v1/emotion/. It is
    served as /v1/emotion/. Inside the security middleware, which checks the path as sent."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        root = scope.get("root_path", "")
        if scope["type"] == "http" and root and scope["path"] in ("", root):
            scope = {**scope, "path": f"{scope['path']}/"}
        await self.app(scope, receive, send)


api = guarded_api(
    title="Adaptive tutor: emotion",
    description="The learner's state and GoEmotions labels for each text.",
    inner_middleware=(_PrefixAlone,),
)


@serve.ingress(api)
class EmotionIngress(EmotionDeployment):
    def __init__(
        self,
        *,
        registry_dir: str,
        store_uri: str,
        torch_threads: int = 1,
        backend: str = "torch",
        auth_enabled: bool = True,
        store: TutorStore | None = None,
    ) -> None:
        """``auth_enabled``: decided by build_emotion_app, as the tutor's (TUTOR_AUTH and the
        proxy's host); API keys are the store's, shared with the tutor."""
        store = store or open_store(store_uri)
        super().__init__(
            registry_dir=registry_dir,
            store_uri=store_uri,
            torch_threads=torch_threads,
            backend=backend,
            store=store,
        )
        config = EmotionUserConfig()
        shed = AdmissionMetrics()
        self._admission = Admission(
            config.admission_limits(), on_refused=shed.observer("predictions")
        )
        self._gate = Gate(store, enabled=auth_enabled, settings=config.gate_settings())
        install_gate(self._gate)

    def configure(self, config: EmotionUserConfig) -> None:
        super().configure(config)
        self._admission.configure(config.admission_limits())
        self._gate.configure(config.gate_settings())

    # "/" under the route prefix: POST /v1/emotion (by _PrefixAlone) and /v1/emotion/. The
    # OpenAPI document names "/", its `servers` entry the prefix.
    @api.post("/", response_model=EmotionResponse)
    async def emotion(self, body: EmotionRequest):
        return await admit(self._admission, lambda: self._answer(body))

    async def _answer(self, body: EmotionRequest) -> EmotionResponse:
        try:
            return await self.classify(body.texts, version=body.model_version)
        except UnknownVersionError as exc:
            # A well-formed request for a version not in service now: a conflict with the
            # application's state (409), as on the tutor's routes.
            raise ConflictError(str(exc)) from exc
