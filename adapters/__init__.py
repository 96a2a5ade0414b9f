"""Model backends behind small per-modality interfaces.

An adapter knows nothing of HTTP: nothing under this package imports fastapi,
starlette or router.
"""
