"""The client's version: the version of the api it speaks to, which it takes on in step (the
tests fail when it differs from the api's)."""

__version__ = "0.1.0"
