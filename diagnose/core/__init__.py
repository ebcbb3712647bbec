"""The torch-free core: records, findings, the rule catalogue, verdicts and summaries, the log-frame and
log readers, source lint, and torch-free file writing. Imports nothing above it (no torch, no
`reference_models`, no `probes`): `import diagnose.core.rules` is cheap, which the rule process
(`diagnose.engine.rule_server`) relies on.

Layers, imports only downward: core <- engine (and `diagnose.integrations`) <- lab <- cli
(tests/test_layers.py checks it).
"""
