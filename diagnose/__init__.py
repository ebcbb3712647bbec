"""`diagnose`: run, probe and explain vision-to-text alignment training."""
