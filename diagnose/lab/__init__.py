"""The reference lab: the only code that imports `reference_models`. Reference training runs with every
probe attached (runs), seed replicas (seeds), ablations and their hypotheses, executors, the images
cache, checkpoint files and their static analysis.
"""
