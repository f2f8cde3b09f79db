"""Model lifecycle, Serve-free: which version serves whom (rollout), what each version did on
live traffic (serving stats, online metrics) and when a canary must be rolled back (guardrail).

The deployments (the Serve edge) and the `tutor` command both build on these modules.
"""
