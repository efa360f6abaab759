"""Serving the app safely: who may talk to it and what it answers with (``guard``), what a callback
request must look like (``body``), the checks before binding (``binding``) and the waitress
server (``serving``).

Nothing here imports anything else of app/: the types of the page's controls reach the body
checks as plain data (app.create_app passes them), so these checks stay small and can be read,
tested and hardened on their own.
"""
