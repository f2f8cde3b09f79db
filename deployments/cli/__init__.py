"""The `tutor` command: operators' and ML engineers' actions on the running application.

Thin like `serve deploy`: ``main`` parses arguments; the work is in functions the tests call
directly (``operations``), over a pure rollout planner (``plan``), the comment-keeping
``serve_config.yaml`` editor (``config_file``) and Serve's own REST client (``serve_client``,
the only module here that imports Ray). ``keys``: API keys, straight in the store.
"""
