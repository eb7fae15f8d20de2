"""Bug hunting: one test run again and again on one host (`xenhil reproduce`), and the
first bad build of an ordered series found by bisection (`xenhil bisect`).

The search and its rules (bisect.py, reproduce.py) only ask a `StepRunner` to run the
test once on a build; harness_steps.py is the one that runs it on the lab.
"""
