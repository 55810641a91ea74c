"""Nuclio entry point (`spec.handler: handler:handler`): `init_context` builds the app once per
worker, `handler` delegates each event to it. The glue lives in `function.service.nuclio`."""

from function.service.nuclio import handler, init_context

__all__ = ["handler", "init_context"]
