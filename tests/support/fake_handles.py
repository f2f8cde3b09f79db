"""In-process stand-ins for Serve's DeploymentHandles, for tests of the code that calls them."""


class FakeMethod:
    def __init__(self, fn):
        self._fn = fn

    def remote(self, *args, **kwargs):
        return self._fn(*args, **kwargs)


class FakeHandle:
    """Quacks like a DeploymentHandle: ``handle.method.remote(...)`` returns an awaitable."""

    def __init__(self, **methods):
        for name, fn in methods.items():
            setattr(self, name, FakeMethod(fn))

    def options(self, **_):
        return self
