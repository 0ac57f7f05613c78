"""Example hooks and model classes, used by the example models and the tests.

Your own hooks and model classes live in a package you install into the Python
worker venv; these show the shape they take.
"""
