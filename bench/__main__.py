"""
C{python -m bench}: the whole benchmark, as C{python bench/run.py}.
"""

from bench.run import main

main()
