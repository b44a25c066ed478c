"""
Benchmarks of phantom-frame; C{python -m bench} runs them all (see
C{bench/run.py}).
"""
