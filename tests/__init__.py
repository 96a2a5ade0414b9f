"""The test suite, a package so that pytest imports tests/conftest.py as
`tests.conftest`: the module the test files import helpers from. (As a bare
`conftest` it was a second copy, whose CURRENT_TEST the fast-tier guard in
ServerProcess.start never saw set.)"""
