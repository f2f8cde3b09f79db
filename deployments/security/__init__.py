"""Who may do what: API keys, route scopes, tenants, per-key limits and the body size limit.

Ray-free: the Ingress installs ``middleware.SecurityMiddleware`` on its FastAPI app and hands it
a ``gate.Gate``; everything here is tested without Serve.
"""
