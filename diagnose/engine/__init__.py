"""The watch engine: `diagnose.watch` around a training loop (watcher), the online rule monitor and its
child process (monitor, rule_server), torchrun ranks, held-out retrieval, the data-signal check on
tensors, and the run directory. Imports `diagnose.core`, `probes`, `reports` and torch, never
`reference_models`. This package file imports nothing, so the rule process loads no torch.
"""
