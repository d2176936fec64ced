"""Studies that orchestrate training, evaluation and explanation into one command with a report:
the demo, cross-validation protocols, transfer, the probing suites.

Import order (docs/architecture.md): ``train, evaluate, explain -> report -> suites -> cli``. Protocols
that *train* cannot live in ``evaluate`` (a peer of ``train``), so they live here.
"""
