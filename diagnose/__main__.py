"""`python -m diagnose ...`, and under torchrun: `torchrun --nproc_per_node=N -m diagnose train|gradflow ...`."""

from .cli import main

if __name__ == "__main__":
    main()
