"""Offline diagnosis: what a checkpoint, a training log or model source can tell without a run.

Library code only (no printing, no file writing): the `checkpoint`, `logs` and `lint` commands in
`diagnose.commands` own the console and the report files.
"""
