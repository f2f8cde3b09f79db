"""`make bench-peers`: the project's serving path beside what a user would run instead.

Kept free of imports: the peer servers (bentoml_service.py, fastapi_naive.py) are imported from
this package inside venvs of their own, which have neither the project's dependencies nor Ray.
"""
