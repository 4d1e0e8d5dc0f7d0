"""The test suite, a package so that its modules import each other and ``tests.support`` by name.

``[tool.pytest.ini_options] pythonpath = ["."]`` puts the repository root on ``sys.path``; a test
that starts a Python subprocess passes the root in ``PYTHONPATH`` so that the child imports the
same names (``tests.support.toys.toy_model``, ``tests.test_resume``).
"""
